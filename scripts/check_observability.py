#!/usr/bin/env python3
"""Proves the dashboards and alerts work against the real service and a real
Prometheus (run by scripts/check-observability.sh, which installs Prometheus and
builds the binary first).

1. Starts `rewardflow dev` (its own PostgreSQL) on a private data directory and
   free ports, with JSON logs at debug level for the service.
2. Starts Prometheus scraping it every second, with prometheus/alerts.yml loaded.
3. Drives real traffic over HTTP, in two rounds a few scrapes apart so that every
   rate() and histogram_quantile() has an increase to work on, then two demo
   purchases whose rewards the pusher puts on the local chain, one after the other,
   and waits until the chain dashboard's panels show them.
4. `promtool check metrics` on /metrics.
5. Evaluates every panel query of grafana/dashboards/*.json and every alert rule
   through Prometheus' HTTP API: each must parse and run; each panel query must
   return at least one finite value. Every alert rule must have been evaluated by
   Prometheus with health "ok".
6. Checks that the JSON logs follow one request: the id sent in X-Request-Id comes
   back in the response header, names the request's span, and is listed by the
   writer's "flush committed" line.

Standard library only. Exits non-zero, listing every failure.
"""

import glob
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "debug", "rewardflow")

# The dashboard whose panels follow the pusher and the indexer: its rates and
# quantiles have data once Prometheus has scraped an increase within their window,
# which the second demo push gives (the check waits for it).
CHAIN_DASHBOARD = "rewardflow-chain"

# Grafana's built-in variables, as Grafana would expand them for a 15 s scrape
# interval (the provisioned datasource's timeInterval) and a 5 minute range.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
}

TOKEN_ADDRESS = "0x" + "70" * 20
TEN_TOKENS = "10000000000000000000"
PER_WALLET_PER_HOUR = 30
TRACED_REQUEST_ID = "obs-check-" + uuid.uuid4().hex[:12]

failures = []


def fail(message):
    failures.append(message)
    print("FAIL: " + message, file=sys.stderr)


def say(message):
    print("==> " + message, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(what, check, timeout=60.0, interval=0.2):
    """Calls check() until it returns a truthy value (returned) or the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http(method, url, body=None, token=None, headers=None):
    """(status, headers, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, head = response.status, response.read(), response.headers
    except urllib.error.HTTPError as err:
        status, raw, head = err.code, err.read(), err.headers
    text = raw.decode()
    try:
        return status, head, json.loads(text)
    except ValueError:
        return status, head, text


class Service:
    """`rewardflow dev` on a private data directory."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDFLOW_")}
        self.env.update({
            "REWARDFLOW_DEV__DATA_DIR": os.path.join(workdir, "rewardflow"),
            # PostgreSQL and anvil on ports found when they start.
            "REWARDFLOW_DEV__POSTGRES_PORT": "0",
            "REWARDFLOW_DEV__ANVIL_PORT": "0",
            "REWARDFLOW_DEV__ANVIL_BIN": os.path.join(
                ROOT, "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"),
            "REWARDFLOW_DEV__DEPLOY_SCRIPT": os.path.join(ROOT, "contracts/scripts/deploy.sh"),
            "REWARDFLOW_SUPERVISOR__MAINTENANCE_INTERVAL_MS": "250",
            "REWARDFLOW_RATE_LIMIT__PER_WALLET_PER_HOUR": str(PER_WALLET_PER_HOUR),
            "REWARDFLOW_TELEMETRY__LOG_FORMAT": "json",
            "REWARDFLOW_TELEMETRY__LOG_LEVEL": "rewardflow=debug,info",
        })
        self.log_path = os.path.join(workdir, "rewardflow.log")
        self.process = None
        self.base = None
        self.demo_product = None

    def start(self):
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [BINARY, "dev", "--listen", "127.0.0.1:0"],
            cwd=self.workdir, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True)
        for line in self.process.stdout:
            if line.startswith("DEMO_PRODUCT_ID="):
                self.demo_product = line.split("=", 1)[1].strip()
            if line.startswith("listening on "):
                self.base = line.split("listening on ", 1)[1].strip()
                return
        raise RuntimeError(f"rewardflow dev exited before listening; see {self.log_path}:\n"
                           + open(self.log_path).read()[-4000:])

    def token(self, wallet):
        out = subprocess.run([BINARY, "token", "--wallet", wallet], cwd=self.workdir,
                             env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Prometheus:
    def __init__(self, workdir, target):
        self.workdir = workdir
        self.config = os.path.join(workdir, "prometheus.yml")
        config = self.config
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {os.path.join(ROOT, "prometheus", "alerts.yml")}
scrape_configs:
  - job_name: rewardflow
    static_configs:
      - targets: ["{target}"]
""")
        self.process = None

    def start(self):
        """Starts Prometheus on a port found free; if another process took that port
        before Prometheus bound it, on another one (three tries)."""
        log_path = os.path.join(self.workdir, "prometheus.log")
        for attempt in range(3):
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
            log = open(log_path, "w")
            self.process = subprocess.Popen(
                ["prometheus", f"--config.file={self.config}",
                 f"--storage.tsdb.path={os.path.join(self.workdir, 'prometheus-data')}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                cwd=self.workdir, stdout=log, stderr=log)

            def ready():
                if self.process.poll() is not None:
                    return "exited"
                try:
                    return http("GET", self.base + "/-/ready")[0] == 200
                except OSError:
                    return False
            if poll("Prometheus to be ready", ready) != "exited":
                return
            text = open(log_path).read()
            if "address already in use" not in text or attempt == 2:
                raise RuntimeError("prometheus exited:\n" + text)

    def query(self, expr):
        """(status, result list or error text) of an instant query."""
        url = self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        code, _, body = http("GET", url)
        if code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            return "error", (body.get("error") if isinstance(body, dict) else body)
        return "success", body["data"]["result"]

    def value(self, expr):
        status, result = self.query(expr)
        if status != "success" or not result:
            return None
        return float(result[0]["value"][1])

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Traffic:
    """Real requests through the public API, the way SDKs and merchants send them."""

    def __init__(self, service):
        self.service = service
        self.api = service.base
        self.wallet_seq = 0
        self.order_seq = 0
        self.owner = service.token(self.wallet())
        self.product = None

    def wallet(self):
        self.wallet_seq += 1
        return "0x5a" + f"{self.wallet_seq:038x}"

    def post(self, path, body, token, expect, headers=None):
        status, head, answer = http("POST", self.api + path, body, token, headers)
        if status not in expect:
            raise RuntimeError(f"POST {path} → {status}, expected {expect}: {answer}")
        return head, answer

    def setup(self):
        _, product = self.post("/v1/products", {"domain": "shop.example", "name": "Shop"},
                               self.owner, {201})
        self.product = product["id"]
        # A bank on another chain than the local node's: registered without an
        # on-chain check, its rewards stay pending (the demo product's are pushed).
        self.post(f"/v1/products/{self.product}/banks",
                  {"chain_id": 1, "bank_address": "0x" + "ba" * 20, "token": TOKEN_ADDRESS,
                   "symbol": "RWD", "decimals": 18}, self.owner, {201})
        # Purchases pay the buyer and up to five referrers from a large capped budget;
        # webshop visits pay from a budget that runs out after two rewards.
        self.campaign({"name": "Purchases", "trigger": "purchase.completed",
                       "budget_cap": "1000000000000000000000"})
        self.campaign({"name": "Visits", "trigger": "webshop.open", "budget_cap": "25000000000000000000"})

    def campaign(self, spec):
        body = {"token": TOKEN_ADDRESS, "reward": {"type": "fixed", "amount": TEN_TOKENS}}
        body.update(spec)
        _, created = self.post(f"/v1/products/{self.product}/campaigns", body, self.owner, {201})
        self.post(f"/v1/campaigns/{created['id']}/activate", None, self.owner, {200})

    def interaction(self, token, kind, expect=(202,), headers=None, **fields):
        body = {"product_id": self.product, "type": kind}
        body.update(fields)
        return self.post("/v1/interactions", body, token, set(expect), headers)

    def round(self, traced=False):
        """Each kind of traffic once: referral chains, purchases (with rewards), a
        duplicate, a batch, rejections, a rate-limited wallet, a failed sign-in,
        ops and business reads."""
        chain = [self.wallet() for _ in range(4)]
        tokens = [self.service.token(w) for w in chain]
        for i in range(3):
            _, answer = self.interaction(tokens[i], "referral.referred", referrer=chain[i + 1])
            assert answer["referral"] == "registered", answer
        self.order_seq += 1
        order = {"order_id": f"order-{self.order_seq}", "amount": "1299", "currency": "EUR"}
        headers = {"x-request-id": TRACED_REQUEST_ID} if traced else None
        head, answer = self.interaction(tokens[0], "purchase.completed", data=order, headers=headers)
        assert len(answer["rewards"]) == 4, answer
        if traced and head.get("x-request-id") != TRACED_REQUEST_ID:
            fail(f"X-Request-Id not echoed: {head.get('x-request-id')!r}")
        _, again = self.interaction(tokens[0], "purchase.completed", data=order)
        assert again["status"] == "duplicate", again
        self.interaction(tokens[1], "webshop.open", data={"page": f"/{self.order_seq}"})
        batch = [{"product_id": self.product, "type": "press.read_article",
                  "data": {"article": f"a{self.order_seq}-{i}"}} for i in range(20)]
        batch.append({"product_id": self.product, "type": "no.such.type"})
        self.post("/v1/interactions", {"interactions": batch}, tokens[2], {202})
        self.post("/v1/interactions", {"product_id": "0x" + "ab" * 32, "type": "webshop.open"},
                  tokens[3], {422})
        self.interaction(tokens[3], "purchase.completed", expect=(422,))
        spammer = self.service.token(self.wallet())
        limited = 0
        for i in range(PER_WALLET_PER_HOUR + 2):
            status, _, _ = http("POST", self.api + "/v1/interactions",
                                {"product_id": self.product, "type": "press.open_article",
                                 "data": {"i": i}}, spammer)
            limited += status == 429
        assert limited >= 1, "the wallet limit never answered 429"
        nonce = http("POST", self.api + "/v1/auth/nonce")[2]["nonce"]
        status = http("POST", self.api + "/v1/auth/wallet",
                      {"message": f"not a SIWE message {nonce}", "signature": "0x00"})[0]
        assert status in (400, 401, 422), status
        for path in ("/healthz", "/readyz", "/openapi.json", "/no/such/route"):
            http("GET", self.api + path)
        http("GET", self.api + "/v1/products", token=self.owner)


def load_dashboards():
    dashboards = []
    for path in sorted(glob.glob(os.path.join(ROOT, "grafana", "dashboards", "*.json"))):
        with open(path) as f:
            dashboards.append(json.load(f))
    return dashboards


def expand(expr):
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def finite_values(result):
    values = []
    for series in result:
        raw = series.get("value", [None, None])[1]
        try:
            number = float(raw)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            values.append(number)
    return values


def panels():
    """Every (dashboard uid, panel), rows left out."""
    for dashboard in load_dashboards():
        for panel in dashboard["panels"]:
            if panel.get("type") != "row":
                yield dashboard["uid"], panel


def panel_problems(prometheus, panel):
    """Why the panel would show nothing: empty when every query has a finite value."""
    problems = []
    for target in panel["targets"]:
        expr = expand(target["expr"])
        if "$" in expr:
            problems.append(f"unknown variable in {expr}")
            continue
        status, result = prometheus.query(expr)
        if status != "success":
            problems.append(f"query refused: {result}\n    {expr}")
        elif not finite_values(result):
            problems.append(f"no data\n    {expr}")
    return problems


def check_dashboards(prometheus):
    count = 0
    for uid, panel in panels():
        count += 1
        for problem in panel_problems(prometheus, panel):
            fail(f"{uid} / {panel['title']}: {problem}")
    return count


def check_alert_rules(prometheus):
    def evaluated_rules():
        code, _, body = http("GET", prometheus.base + "/api/v1/rules")
        if code != 200:
            return None
        rules = [r for g in body["data"]["groups"] for r in g["rules"]]
        # Not evaluated yet: health "unknown" and a zero lastEvaluation (year 0001).
        done = all(r.get("health") != "unknown" and not r.get("lastEvaluation", "0001").startswith("0001")
                   for r in rules)
        return rules if rules and done else None
    rules = poll("Prometheus to evaluate every alert rule", evaluated_rules, timeout=30)
    for rule in rules:
        if rule.get("health") != "ok":
            fail(f"alert {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
        status, result = prometheus.query(rule["query"])
        if status != "success":
            fail(f"alert {rule['name']}: query refused: {result}")
    return len(rules)


def check_metrics_lint(service):
    _, _, text = http("GET", service.base + "/metrics")
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    if lint.returncode != 0 or lint.stdout.strip() or lint.stderr.strip():
        fail("promtool check metrics:\n" + lint.stdout + lint.stderr)
    return text


def check_logs(service):
    """The traced request id names the request's span and the flush that stored it."""
    answered = flushed = False
    with open(service.log_path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                fail(f"a log line is not JSON: {line.strip()[:200]}")
                continue
            fields = entry.get("fields", {})
            spans = entry.get("spans", [])
            in_request = any(s.get("request_id") == TRACED_REQUEST_ID for s in spans)
            if fields.get("message") == "interactions answered" and in_request:
                answered = True
            if (fields.get("message") == "flush committed"
                    and TRACED_REQUEST_ID in str(fields.get("requests", "")).split(",")):
                flushed = True
    if not answered:
        fail(f"no 'interactions answered' log line in the span of request {TRACED_REQUEST_ID}")
    if not flushed:
        fail(f"no 'flush committed' log line names request {TRACED_REQUEST_ID}")


def main():
    workdir = tempfile.mkdtemp(prefix="rewardflow-obs-")
    # Run as root, the dev cluster is kept under the data directory only if the
    # postgres user can reach it (else under /var/lib/rewardflow, outliving us).
    os.chmod(workdir, 0o755)
    service = Service(workdir)
    prometheus = None
    try:
        say("starting rewardflow dev")
        service.start()
        target = service.base.split("://", 1)[1]
        say(f"starting Prometheus against {target}")
        prometheus = Prometheus(workdir, target)
        prometheus.start()
        poll("the first scrape", lambda: prometheus.value('up{job="rewardflow"}') == 1)

        say("traffic, round 1")
        traffic = Traffic(service)
        traffic.setup()
        traffic.round()
        # Let Prometheus see round 1 before round 2, so rates and quantiles have an increase.
        poll("a scrape of round 1",
             lambda: (prometheus.value('sum(rewardflow_interactions_total{outcome="accepted"})') or 0) > 0)
        say("traffic, round 2")
        traffic.round(traced=True)
        text = check_metrics_lint(service)
        accepted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("rewardflow_interactions_total{") and 'outcome="accepted"' in line)
        poll("a scrape of round 2",
             lambda: (prometheus.value('sum(rewardflow_interactions_total{outcome="accepted"})') or 0) >= accepted)

        say("a demo purchase, pushed on-chain")
        buyer = traffic.wallet()
        status, _, answer = http("POST", service.base + "/v1/interactions",
                                 {"product_id": service.demo_product, "type": "purchase.completed",
                                  "data": {"order_id": "demo-1"}}, service.token(buyer))
        if status != 202:
            raise RuntimeError(f"demo purchase → {status}: {answer}")
        poll("the demo reward pushed and indexed",
             lambda: (prometheus.value("sum(rewardflow_push_rewards_total)") or 0) > 0
             and (prometheus.value('sum(rewardflow_indexer_events_total{event="RewardAdded"})') or 0) > 0,
             timeout=120.0)
        status, _, answer = http("POST", service.base + "/v1/interactions",
                                 {"product_id": service.demo_product, "type": "purchase.completed",
                                  "data": {"order_id": "demo-2"}}, service.token(buyer))
        if status != 202:
            raise RuntimeError(f"demo purchase → {status}: {answer}")
        poll("the second demo reward pushed",
             lambda: (prometheus.value("sum(rewardflow_push_rewards_total)") or 0) >= 2,
             timeout=120.0)
        chain_panels = [panel for uid, panel in panels() if uid == CHAIN_DASHBOARD]
        poll("the chain panels showing the pushes",
             lambda: all(not panel_problems(prometheus, panel) for panel in chain_panels))
        say("evaluating dashboard panels")
        panel_count = check_dashboards(prometheus)
        say("evaluating alert rules")
        rules = check_alert_rules(prometheus)
        check_logs(service)
        say(f"{panel_count} panels and {rules} alert rules evaluated")
    except Exception as err:  # noqa: BLE001 — any error fails the check, loudly
        fail(f"{type(err).__name__}: {err}")
    finally:
        if prometheus:
            prometheus.stop()
        service.stop()
        if failures:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print(f"observability check FAILED ({len(failures)} problem(s))", file=sys.stderr)
        sys.exit(1)
    say("observability check passed")


if __name__ == "__main__":
    main()
