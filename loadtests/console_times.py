"""Time each console page's admin API calls: REPS sequential calls on one
keep-alive connection after two warm-ups; prints p50/p99 in ms (Markdown).
Used by loadtests/console.sh."""

import http.client
import statistics
import sys
import time
import urllib.parse

base, token, reps, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
H = {"Authorization": f"Bearer {token}"}


def get(path):
    conn.request("GET", path, headers=H)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"{path}: HTTP {r.status}: {body[:300]!r}")
    return body


# A request-log cursor for "older requests" (page 2).
import json  # noqa: E402

first = json.loads(get("/v1/admin/requests?limit=50"))["data"]
cursor = f"&before={first[-1]['ts_ms']}&before_id={first[-1]['id']}" if first else ""
now = int(time.time())
month = now - 30 * 86400
# The console's Usage page asks for whole hours (the hourly rollups answer).
hour = now // 3600 * 3600
day_range = f"from={hour - 23 * 3600}&to={hour + 3600}"
month_range = f"from={hour - 30 * 86400}&to={hour + 3600}"

CALLS = [
    ("Overview", "/v1/admin/console/overview?window=hour&split=model"),
    ("Overview", "/v1/admin/console/overview?window=day&split=target"),
    ("Overview", "/v1/admin/console/overview?window=month&split=model"),
    ("Usage", f"/v1/admin/usage?group_by=model&granularity=total&{day_range}"),
    ("Usage", f"/v1/admin/usage?group_by=org,model&granularity=day&{month_range}"),
    ("Usage", f"/v1/admin/usage?group_by=key&granularity=total&{day_range}"),
    ("Usage", f"/v1/admin/usage?group_by=model&granularity=hour&from={month}"),
    ("Usage", "/v1/admin/requests?limit=50"),
    ("Usage", "/v1/admin/requests?limit=50" + cursor),
    ("Usage", f"/v1/admin/requests?limit=50&key=key_fill07&from={month}"),
    ("Usage", f"/v1/admin/requests?limit=50&model=fast&target=groq&from={month}"),
    ("Usage", f"/v1/admin/usage?group_by=model&granularity=day&{month_range}&format=csv"),
    ("Keys", "/v1/admin/keys?limit=1000"),
    ("Keys", "/v1/admin/orgs?limit=1000"),
    ("Providers & routes", "/v1/admin/providers?limit=1000"),
    ("Providers & routes", "/v1/admin/routes?limit=1000"),
    ("Providers & routes", "/v1/admin/targets?limit=1000"),
    ("Nodes", "/v1/admin/nodes?limit=1000"),
    ("Nodes", "/v1/admin/enrollment-tokens?limit=1000"),
    ("Audit log", "/v1/admin/audit?limit=200"),
]

print(f"| page | API call ({rows} logged requests over 30 days) | p50 ms | p99 ms | bytes |")
print("|---|---|---:|---:|---:|")
for page, path in CALLS:
    for _ in range(2):
        get(path)
    times = []
    size = 0
    for _ in range(reps):
        t = time.perf_counter()
        size = len(get(path))
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    shown = (
        path.replace(day_range, "<last 24 h, whole hours>")
        .replace(month_range, "<last 30 days, whole hours>")
        .replace(str(month), "<30 days ago, any second>")
    )
    print(f"| {page} | `GET {shown}` | {p50:.1f} | {p99:.1f} | {size} |")
