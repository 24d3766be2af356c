#!/usr/bin/python3
"""Receive oslo.messaging notifications with the real notification listener.

The listener an OpenStack service runs (oslo_messaging.get_notification_listener,
rabbit driver, Debian python3-oslo.messaging 14): it declares its queues
`<topic>.<priority>` on the control exchange as oslo does, and dispatches each
message to the endpoint method named after the message's priority. Run with
/usr/bin/python3.

stdout: "ready" once the listener consumes, then one JSON line per dispatched
notification: {"method", "priority", "publisher_id", "event_type",
"message_id", "timestamp", "payload"}. It stops after --count notifications or
--idle seconds without one.
"""
import argparse
import json
import sys
import threading
import time


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    p.add_argument('--exchange', required=True)
    p.add_argument('--topic', required=True)
    p.add_argument('--durable', action='store_true',
                   help='[oslo_messaging_rabbit] amqp_durable_queues = true')
    p.add_argument('--methods', default='info,warn,error',
                   help='endpoint methods (priorities) to take')
    p.add_argument('--count', type=int, required=True)
    p.add_argument('--idle', type=float, default=20.0)
    a = p.parse_args(argv)

    from oslo_config import cfg
    import oslo_messaging

    conf = cfg.ConfigOpts()
    conf([], project='vitrage_persistor_interop', default_config_files=[],
         default_config_dirs=[])
    oslo_messaging.set_transport_defaults(a.exchange)
    transport = oslo_messaging.get_notification_transport(conf, url=a.url)
    conf.set_override('amqp_durable_queues', a.durable,
                      group='oslo_messaging_rabbit')

    lock = threading.Lock()
    state = {'n': 0, 'last': time.monotonic()}
    done = threading.Event()

    def handler(method):
        def receive(self, ctxt, publisher_id, event_type, payload, metadata):
            line = {'method': method, 'publisher_id': publisher_id,
                    'event_type': event_type,
                    'message_id': metadata.get('message_id'),
                    'timestamp': metadata.get('timestamp'),
                    'payload': payload}
            with lock:
                sys.stdout.write(json.dumps(line) + '\n')
                sys.stdout.flush()
                state['n'] += 1
                state['last'] = time.monotonic()
                if state['n'] >= a.count:
                    done.set()
        return receive

    endpoint = type('Endpoint', (), {m: handler(m) for m in a.methods.split(',')})()
    targets = [oslo_messaging.Target(topic=a.topic, exchange=a.exchange)]
    listener = oslo_messaging.get_notification_listener(
        transport, targets, [endpoint], executor='threading')
    listener.start()
    sys.stdout.write('ready\n')
    sys.stdout.flush()
    while not done.wait(0.2):
        with lock:
            if time.monotonic() - state['last'] > a.idle:
                break
    listener.stop()
    listener.wait()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
