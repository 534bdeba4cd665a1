#!/usr/bin/env python3
"""Writes the response-cache cost traffic: one GET whose response has a body of SIZE bytes,
delivered in 16 KiB chunks (as Envoy reads them).

  python3 filters/response-cache/tests/cost.py 1000 hit > target/response-cache-hit-1000.json
  python3 filters/response-cache/tests/cost.py 1000 store > target/response-cache-store-1000.json

`hit`: `cache-control: max-age=31536000` and a `date` of when the file was written (Envoy's
native cache only stores responses with a `date`); the first pass stores it, every later pass is a hit answered
by the filter (the upstream is not asked). `store`: `max-age=0`; every pass is a miss whose
response is copied as it passes and stored again (the miss path at its most expensive).
"""
import email.utils
import json
import sys

size = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
mode = sys.argv[2] if len(sys.argv) > 2 else "hit"
max_age = {"hit": 31536000, "store": 0}[mode]
date = email.utils.formatdate(usegmt=True)

body = ("lorem ipsum dolor sit amet, " * (size // 28 + 1))[:size]
chunks = [body[i:i + 16384] for i in range(0, len(body), 16384)] or [""]
print(json.dumps({"tollgate_traffic": 1, "exchanges": [{
    "id": f"{mode}-{size}",
    "request": {"method": "GET", "authority": "shop.example.com", "path": f"/items/{mode}-{size}",
                "headers": []},
    "response": {"status": 200,
                 "headers": [["content-type", "text/plain"], ["cache-control", f"max-age={max_age}"],
                             ["etag", "\"v1\""], ["date", date], ["content-length", str(len(body))]],
                 "body": chunks},
}]}))
