#!/usr/bin/env python3
"""Writes the json-mask cost traffic: one POST with a JSON request body and a JSON response of
about SIZE bytes each, both delivered in 16 KiB chunks (as Envoy reads them), with a secret of
each configured kind every ~1 KB (demo.json's rules).

  python3 filters/json-mask/tests/cost.py 1000 > target/json-mask-cost-1k.json
  cargo tollgate bench --filter target/filters/json-mask.wasm --config @filters/json-mask/demo.json target/json-mask-cost-1k.json
"""
import json
import sys

size = int(sys.argv[1]) if len(sys.argv) > 1 else 1000


def document(size):
    items, n = [], 0
    while len(json.dumps({"customer": {"ssn": "123-45-6789"}, "items": items})) < size:
        items.append({
            "sku": f"A-{n:05}", "qty": n % 7, "price": 12.5,
            "note": f"mail ada{n}@example.com, card 4111 1111 1111 1111, id NID-{n:08}",
            "password": "hunter2", "text": "lorem ipsum dolor sit amet " * 20,
        })
        n += 1
    return json.dumps({"customer": {"ssn": "123-45-6789"}, "items": items}, indent=1)


def chunks(text, size=16384):
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


doc = document(size)
print(json.dumps({"tollgate_traffic": 1, "exchanges": [{
    "id": f"json-{len(doc)}",
    "request": {"method": "POST", "authority": "api.example.com", "path": "/orders",
                "headers": [["content-type", "application/json"], ["content-length", str(len(doc))]],
                "body": chunks(doc)},
    "response": {"status": 200,
                 "headers": [["content-type", "application/json"], ["content-length", str(len(doc))]],
                 "body": chunks(doc)},
}]}))
