#!/usr/bin/python3
"""Publish oslo.messaging notifications over RabbitMQ (rabbit driver).

Uses the real oslo.messaging Notifier (Debian python3-oslo.messaging 14), so
exchange/queue declaration, envelope and AMQP properties are exactly what an
OpenStack service would produce.  Run with /usr/bin/python3.

Example:
  /usr/bin/python3 oslo_publish.py --url rabbit://guest:guest@127.0.0.1:5672/ \
      --exchange vitrage_test --topic vitrage_persistor --count 3 \
      --event-type compute.instance.update [--durable] [--driver messaging]

stdout: one JSON line per notification:
  {"seq": i, "ok": bool, "message_id": "...", "unique_id": "...",
   "exchange": ..., "routing_key": ..., "event_type": ..., "error": ...}
exit status: 0 only if every notification was handed to the broker without
error (publisher confirms are enabled by oslo), 1 if any failed, 2 on usage or
setup errors.

message_id: oslo generates it itself (uuid4 in Notifier._notify) and does not
return it.  The message dict it builds is passed (and then mutated in place with
_unique_id / _context_*) to Transport._send_notification(); we wrap that method
on our transport instance to read message_id/_unique_id and to see the
exception that MessagingDriver.notify() would otherwise swallow (it only logs
"Could not send notification ...").  If a future oslo renames that private
method, message_id is reported as null and success is judged from the
swallowed-error log records instead.
"""
import argparse
import datetime
import json
import logging
import sys


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/',
                   help='oslo transport URL, e.g. rabbit://user:pass@host:5672/'
                        ' (vhost "/" is the default; use %%2F or // explicitly)')
    p.add_argument('--exchange', default='openstack',
                   help='sets [DEFAULT] control_exchange (= notification '
                        'exchange name); oslo default is "openstack"')
    p.add_argument('--topic', default='notifications',
                   help='notification topic; routing key/queue is '
                        '<topic>.<priority>')
    p.add_argument('--durable', action='store_true',
                   help='[oslo_messaging_rabbit] amqp_durable_queues = true')
    p.add_argument('--quorum', action='store_true',
                   help='[oslo_messaging_rabbit] rabbit_quorum_queue = true')
    p.add_argument('--compression', default=None,
                   help='[oslo_messaging_rabbit] kombu_compression (a kombu name: gzip, bzip2, brotli, xz)')
    p.add_argument('--set', action='append', default=[],
                   help='[oslo_messaging_rabbit] option=value (repeatable), for '
                        'options without a flag of their own')
    p.add_argument('--count', type=int, default=1)
    p.add_argument('--event-type', default='vitrage.interop.sample')
    p.add_argument('--priority', default='info',
                   choices=['audit', 'debug', 'info', 'warn', 'warning',
                            'error', 'critical', 'sample'])
    p.add_argument('--publisher-id', default='vitrage.interop')
    p.add_argument('--driver', default='messagingv2',
                   choices=['messagingv2', 'messaging'],
                   help='messagingv2 = oslo.version 2.0 envelope; messaging = '
                        'v1 (bare JSON message)')
    p.add_argument('--payload', default=None,
                   help='JSON payload sent verbatim for every message '
                        '(default: {"seq": i, "vitrage_sample_date": now})')
    p.add_argument('--retry', type=int, default=3,
                   help='oslo retry for recoverable (connection) errors; '
                        '-1 = forever (oslo default), 0 = none')
    p.add_argument('--verbose', action='store_true',
                   help='DEBUG logging of oslo.messaging on stderr')
    p.add_argument('--quiet', action='store_true',
                   help='no oslo log output on stderr (errors still go to '
                        'the JSON lines and the exit status)')
    a = p.parse_args(argv)
    if a.count < 0:
        p.error('--count must be >= 0')
    if a.payload is not None:
        try:
            a.payload_obj = json.loads(a.payload)
        except ValueError as e:
            p.error('--payload is not valid JSON: %s' % e)
    return a


class _SwallowedErrors(logging.Handler):
    """Collects ERROR records that oslo logs instead of raising."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr,
                        level=logging.DEBUG if a.verbose else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s: '
                               '%(message)s')
    if a.quiet:
        logging.getLogger().handlers[0].setLevel(logging.CRITICAL + 1)
    swallowed = _SwallowedErrors()
    for name in ('oslo_messaging.notify.messaging',
                 'oslo_messaging.notify.notifier'):
        logging.getLogger(name).addHandler(swallowed)

    try:
        from oslo_config import cfg
        import oslo_messaging
    except ImportError as e:
        print('cannot import oslo.messaging (use /usr/bin/python3): %s' % e,
              file=sys.stderr)
        return 2

    conf = cfg.ConfigOpts()
    conf([], project='vitrage_persistor_interop', default_config_files=[],
         default_config_dirs=[])
    # control_exchange is registered by get_*_transport(); the public way to
    # set it beforehand is set_transport_defaults() (it is read once, when
    # the driver is created, and becomes the driver's default_exchange).
    oslo_messaging.set_transport_defaults(control_exchange=a.exchange)
    try:
        transport = oslo_messaging.get_notification_transport(conf, url=a.url)
    except Exception as e:
        print('cannot create transport for %r: %s' % (a.url, e),
              file=sys.stderr)
        return 2
    # [oslo_messaging_rabbit] is registered when the driver loads; the
    # Connection objects that read these options are created lazily on the
    # first send, so overriding now takes effect.
    conf.set_override('amqp_durable_queues', a.durable,
                      group='oslo_messaging_rabbit')
    conf.set_override('rabbit_quorum_queue', a.quorum,
                      group='oslo_messaging_rabbit')
    for kv in a.set:
        k, v = kv.split('=', 1)
        conf.set_override(k, v, group='oslo_messaging_rabbit')
    if a.compression is not None:
        conf.set_override('kombu_compression', a.compression,
                          group='oslo_messaging_rabbit')

    calls = []  # one entry per Transport._send_notification call

    orig_send = getattr(transport, '_send_notification', None)
    if orig_send is not None:
        def _send_notification(target, ctxt, message, version, retry=None):
            rec = {'message': message, 'topic': target.topic, 'error': None}
            calls.append(rec)
            try:
                return orig_send(target, ctxt, message, version, retry=retry)
            except Exception as e:
                rec['error'] = '%s: %s' % (type(e).__name__, e)
                raise  # let oslo log it exactly as it normally would
        transport._send_notification = _send_notification

    notifier = oslo_messaging.Notifier(transport, publisher_id=a.publisher_id,
                                       driver=a.driver, topics=[a.topic],
                                       retry=a.retry)
    send = getattr(notifier, a.priority)
    ctxt = {}  # empty request context -> no _context_* keys in the message

    failures = 0
    for i in range(a.count):
        if a.payload is not None:
            payload = a.payload_obj
        else:
            payload = {'seq': i,
                       'vitrage_sample_date': datetime.datetime.utcnow()
                       .strftime('%Y-%m-%d %H:%M:%S.%f')}
        n_calls, n_errs = len(calls), len(swallowed.records)
        error = None
        try:
            send(ctxt, a.event_type, payload)  # never raises in oslo 14
        except Exception as e:  # defensive
            error = '%s: %s' % (type(e).__name__, e)
        mine = calls[n_calls:]
        if error is None:
            errs = [c['error'] for c in mine if c['error']]
            if errs:
                error = errs[0]
            elif orig_send is not None and not mine:
                error = 'notifier did not reach the transport ' \
                        '(driver failed to load?)'
            elif len(swallowed.records) > n_errs:
                error = swallowed.records[-1].getMessage()
        msg = mine[0]['message'] if mine else {}
        ok = error is None
        failures += not ok
        print(json.dumps({
            'seq': i, 'ok': ok,
            'message_id': msg.get('message_id'),
            'unique_id': msg.get('_unique_id'),
            'exchange': a.exchange,
            'routing_key': mine[0]['topic'] if mine else
            '%s.%s' % (a.topic, a.priority if a.priority != 'warning'
                       else 'warn'),
            'event_type': a.event_type, 'driver': a.driver,
            'durable': a.durable or a.quorum,
            'timestamp': msg.get('timestamp'),
            'error': error}), flush=True)

    try:
        transport.cleanup()
    except Exception as e:
        print('transport cleanup failed: %s' % e, file=sys.stderr)
    return 0 if failures == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
