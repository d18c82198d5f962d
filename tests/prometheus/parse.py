"""Parses a Prometheus text exposition with the prometheus_client library's own parser and prints
it as JSON: {family: {"type": ..., "help": ..., "samples": [[name, {labels}, value], ...]}}.
Any syntax error raises. Usage: python parse.py < metrics.txt
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {
        'type': family.type,
        'help': family.documentation,
        'samples': [[s.name, s.labels, s.value] for s in family.samples],
    }
json.dump(out, sys.stdout)
