#!/usr/bin/python3
"""The reference for ../history-vitrage-differential.test.ts: OpenStack Vitrage 9.0.0's own
alarm-history code (Debian package python3-vitrage), run by /usr/bin/python3, nothing copied.

Each case's events go through Vitrage's persistor endpoint (VitragePersistorEndpoint.info, what
oslo.messaging calls for each notification on the vitrage_persistor topic) into Vitrage's own
storage (impl_sqlalchemy.Connection) on SQLite in memory, its tables created from its own models
(what vitrage's migration.create_schema does). The questions are then asked of Vitrage's API
handlers (AlarmApis.get_alarms with the arguments its REST controller passes, get_alarm_counts,
RcaApis.get_rca), with the storage's clock (db_time) set to the question's `now`.

stdin: [{"events": [{"event_type", "payload"}],
         "questions": [{"after": N (events applied first), "now": "...", "ask": "alarms" | "counts"
                        | "rca" | "tables", "kwargs": {...}, "project": P, "root": ID}]}]
stdout: [{"rejected": [indexes of events whose write Vitrage raised on], "answers": [...]}]
A question Vitrage raises on answers {"error": "..."}.
"""
import datetime
import json
import sys
import threading

from dateutil import parser
from oslo_config import cfg
from oslo_db import options as db_options

db_options.set_defaults(cfg.CONF)
cfg.CONF([], project='vitrage')

import vitrage.api_handler.apis.alarm as alarm_api  # noqa: E402
import vitrage.api_handler.apis.rca as rca_api  # noqa: E402
from vitrage.common.utils import decompress_obj  # noqa: E402
from vitrage.persistency.service import VitragePersistorEndpoint  # noqa: E402
import vitrage.storage.history_facade as history_facade  # noqa: E402
from vitrage.storage.impl_sqlalchemy import Connection  # noqa: E402
from vitrage.storage.sqlalchemy import models  # noqa: E402

# The storage and the API handlers read the clock through db_time (naive UTC); a question sets it.
clock = {'now': None}
for module in (history_facade, alarm_api, rca_api):
    module.db_time = lambda: clock['now']

db = Connection('sqlite://')
models.Base.metadata.create_all(db._engine_facade.get_engine())
endpoint = VitragePersistorEndpoint(db)
lock = threading.RLock()
alarms = alarm_api.AlarmApis(None, lock, db)
rca = rca_api.RcaApis(None, lock, db)

# What Vitrage's REST controller (api/controllers/v1/alarm_base.py) passes when a client gives none.
REST_DEFAULTS = {'limit': 10000, 'sort_by': ['start_timestamp', 'vitrage_id'], 'sort_dirs': ['asc', 'asc'],
                 'filter_by': [], 'filter_vals': [], 'next_page': True, 'marker': None, 'start': None, 'end': None,
                 'only_active_alarms': False}


def naive_utc(text):
    t = parser.parse(text)
    return t.astimezone(datetime.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def iso(t):
    return None if t is None or t == models.DEFAULT_END_TIME else t.isoformat()


def ctx_of(q):
    return {'project_id': q['project'], 'is_admin': False} if 'project' in q else {}


def answer(q):
    ask = q['ask']
    if ask == 'alarms':
        kwargs = dict(REST_DEFAULTS, **q.get('kwargs', {}))
        return decompress_obj(alarms.get_alarms(ctx_of(q), 'all', 'project' not in q, **kwargs))['alarms']
    if ask == 'counts':
        return json.loads(alarms.get_alarm_counts(ctx_of(q), 'project' not in q))
    if ask == 'rca':
        return json.loads(rca.get_rca({}, q['root'], True))
    if ask == 'tables':
        session = db._engine_facade.get_session()
        return {
            'alarms': [{'vitrage_id': a.vitrage_id, 'start_timestamp': iso(a.start_timestamp),
                        'end_timestamp': iso(a.end_timestamp),
                        'vitrage_operational_severity': a.vitrage_operational_severity,
                        'vitrage_resource_project_id': a.vitrage_resource_project_id}
                       for a in db.history_facade.get_alarms(limit=0)],
            'edges': [{'source_id': e.source_id, 'target_id': e.target_id, 'label': e.label,
                       'start_timestamp': iso(e.start_timestamp), 'end_timestamp': iso(e.end_timestamp)}
                      for e in session.query(models.Edge).all()],
        }
    raise ValueError('unknown question %r' % ask)


def run(case):
    db.alarms.delete()
    db.edges.delete()
    db.changes.delete()
    events = case['events']
    rejected = []
    applied = 0
    answers = []
    for q in case['questions']:
        while applied < q['after']:
            e = events[applied]
            try:
                endpoint.info({}, 'vitrage.graph', e['event_type'], e['payload'], {})
            except Exception:
                # oslo.messaging's listener logs an endpoint's exception and goes on.
                rejected.append(applied)
            applied += 1
        clock['now'] = naive_utc(q['now'])
        try:
            answers.append(answer(q))
        except Exception as e:
            answers.append({'error': '%s: %s' % (type(e).__name__, e)})
    return {'rejected': rejected, 'answers': answers}


print(json.dumps([run(case) for case in json.load(sys.stdin)]))
