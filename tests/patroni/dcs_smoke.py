"""Patroni's etcd3 DCS layer against one endpoint, without PostgreSQL (issue 14).

Two Patroni nodes' DCS objects, as Patroni's HA loop uses them: bootstrap (initialize key), member
keys with leases, the leader race, leader updates, configuration and failover keys, a switchover
(leader deleted, the other takes it) and the cluster's removal. The watch-based cache of each node
must see the other's writes. Prints "patroni dcs smoke ok" on success; any failure raises.

Usage: python dcs_smoke.py HOST:PORT
"""
import json
import sys
import time

from patroni.dcs import get_dcs

ENDPOINT = sys.argv[1]
DEADLINE_SECONDS = 30


def node(name):
    return get_dcs({
        'scope': 'smoke', 'name': name, 'ttl': 30, 'loop_wait': 10, 'retry_timeout': 10,
        'etcd3': {'hosts': [ENDPOINT]},
    })


def eventually(what, check):
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('not within %ss: %s' % (DEADLINE_SECONDS, what))
        time.sleep(0.05)


def member(name, role):
    return {'conn_url': 'postgres://127.0.0.1:5432/postgres', 'state': 'running',
            'api_url': 'http://127.0.0.1:8008/patroni', 'role': role, 'xlog_location': 100,
            'name': name}


pg1, pg2 = node('pg1'), node('pg2')
cluster = pg1.get_cluster()
assert cluster.leader is None and cluster.initialize is None, cluster

assert pg1.initialize(create_new=True, sysid='7000000000000000001')
assert not pg2.initialize(create_new=True, sysid='7000000000000000002'), 'bootstrapped twice'
assert pg1.touch_member(member('pg1', 'primary'))
assert pg2.touch_member(member('pg2', 'replica'))
assert pg1.attempt_to_acquire_leader()
assert not pg2.attempt_to_acquire_leader(), 'two leaders'

seen = eventually('pg2 sees pg1 lead with both members', lambda: (
    lambda c: c if c.leader and c.leader.name == 'pg1' and len(c.members) == 2 else None)(
        pg2.get_cluster()))
assert seen.initialize == '7000000000000000001', seen.initialize

assert pg1.update_leader(pg1.get_cluster(), last_lsn=200)
assert pg1.set_config_value(json.dumps({'ttl': 30, 'loop_wait': 10, 'postgresql': {}}))
assert pg1.set_failover_value(json.dumps({'leader': 'pg1', 'member': 'pg2'}))
eventually('pg2 sees the failover and the configuration', lambda: (
    lambda c: c.failover and c.failover.candidate == 'pg2' and c.config
    and c.config.data.get('ttl') == 30)(pg2.get_cluster()))

# A switchover: pg1 lets go, pg2 takes the leader key.
assert pg1.delete_leader(pg1.get_cluster().leader, last_lsn=300)
eventually('pg2 sees no leader', lambda: pg2.get_cluster().leader is None)
assert pg2.attempt_to_acquire_leader()
eventually('pg1 sees pg2 lead', lambda: (
    lambda c: c.leader and c.leader.name == 'pg2')(pg1.get_cluster()))
assert pg2.refresh_lease() or True
assert pg2.delete_cluster()
eventually('the cluster is gone', lambda: (
    lambda c: c.leader is None and not c.members and c.initialize is None)(pg1.get_cluster()))
print('patroni dcs smoke ok')
