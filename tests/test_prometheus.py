"""The alert rules and the dashboard, proven on a real Prometheus (Debian's package).

* ``promtool check rules`` and ``promtool test rules`` on deploy/prometheus/ (the test file
  must hold every alert both firing and not firing);
* each alert's annotations (summary, description, a runbook_url whose anchor is a section
  of docs/OPERATIONS.md), the recording rules' level:metric:operations names, the
  dashboard's datasource variable;
* a real Prometheus scrapes a live gateway started through the single file (real runc)
  while webhooks, a review that succeeds, one the LLM server fails and a forged signature
  go in; then every recording rule, every alert expression and every dashboard panel
  query (read from the two files, so a new one is checked too) is asked of its HTTP API:
  each evaluates without error, and each has data where the traffic makes data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from changes import wait_until
from conftest import ROOT, needs_root
from fake_forgejo import FakeForgejo
from fake_openai import FakeOpenAI, Reply, error_body
from gitserver import GitHttpsServer, commit, make_ca, make_repo
from test_serve_sandbox import TOKEN, Gateway, deliver, final_states, pr_event

RULES = ROOT / "deploy" / "prometheus" / "auto-review.rules.yaml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "auto-review.rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "auto-review.dashboard.json"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
METRICS_MODULE = ROOT / "payload" / "gateway" / "auto_review_gateway" / "core" / "metrics.py"
# Debian's `prometheus` package (.ci/setup installs it)
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# Grafana's variables, as the test gives them to Prometheus
GRAFANA_VARIABLES = {"$job": ".+", "$__rate_interval": "1m", "$__range": "1h"}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def recordings() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}


def panel_queries() -> dict[str, str]:
    """``"<panel title> <refId>"`` -> its PromQL with Grafana's variables filled in."""
    doc = json.loads(DASHBOARD.read_text())
    out = {}
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
                expr = expr.replace(name, GRAFANA_VARIABLES[name])
            assert "$" not in expr, f"{panel['title']}: unknown variable in {target['expr']}"
            out[f"{panel['title']} {target['refId']}"] = expr
    return out


# --------------------------------------------------------------------------- static


def test_promtool_checks_the_rules_and_runs_their_tests() -> None:
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tested = subprocess.run([PROMTOOL, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, set[bool]] = {}
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            cases.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    assert {name: {True, False} for name in alerts()} == cases


def test_every_alert_has_severity_summary_description_and_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("## ")
    }
    for name, rule in alerts().items():
        assert re.fullmatch(r"AutoReview[A-Za-z]+", name)
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert "check" in notes["description"].lower(), f"{name}: what to check first?"
        assert notes["runbook_url"] == f"docs/OPERATIONS.md#{name.lower()}"
        assert name.lower() in anchors, f"docs/OPERATIONS.md has no section ## {name}"


def test_recording_rules_are_named_level_metric_operations() -> None:
    for name, expr in recordings().items():
        level, metric, operations = name.split(":")
        assert level == "job", name
        assert "by (job" in expr or "job:" in expr, f"{name} is not at the job level"
        assert metric.startswith("auto_review_") and not metric.endswith("_total"), name
        assert re.fullmatch(r"[a-z0-9_]+", operations), name


def test_every_metric_the_files_use_is_declared_and_documented() -> None:
    declared = set(re.findall(r'^    "([a-z_]+)": \(', METRICS_MODULE.read_text(), re.M))
    used = set()
    for expr in [*recordings().values(), *(r["expr"] for r in alerts().values()),
                 *panel_queries().values()]:  # fmt: skip
        used |= set(re.findall(r"(?<![:\w])auto_review_([a-z_]+)", expr))
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert used <= declared, used - declared
    operations = OPERATIONS.read_text()
    assert [m for m in sorted(declared) if f"auto_review_{m}" not in operations] == []


def test_the_dashboard_has_a_datasource_variable_and_uses_it_everywhere() -> None:
    doc = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"] and all(t["datasource"] == panel["datasource"]
                                        for t in panel["targets"])  # fmt: skip
    titles = {p["title"] for p in doc["panels"]}
    assert {"LLM tokens", "Version, bundle, isolation", "LLM request latency"} <= titles


# --------------------------------------------------------------------------- live


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """Debian's prometheus on a loopback port with a temporary storage dir, scraping
    ``target`` every second and evaluating ``rules`` every second."""

    def __init__(self, workdir: Path, target: str, rule_file: Path) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rule_file)],
                    "scrape_configs": [
                        {"job_name": "auto-review", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.wal = workdir / "data" / "wal"
        try:  # re-checked at each line Prometheus logs ("Server is ready..." is one)
            wait_until(self._ready, dirs=[workdir], timeout=60, what="Prometheus to be ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited (see prometheus.log)"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait(
        self, what: str, predicate: Callable[[], Any], change_fds: tuple[int, ...] = ()
    ) -> None:
        """Return once ``predicate()`` is truthy, re-checked after each write to the
        TSDB's write-ahead log: every scrape and every rule evaluation commits there
        (each second here), so a condition on either is seen at the next one."""
        wait_until(lambda: bool(predicate()), dirs=[self.wal], change_fds=change_fds,
                   timeout=60, what=what)  # fmt: skip

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``: the ``data`` of a success; AssertionError with
        Prometheus' error otherwise."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                doc = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            doc = json.loads(exc.read() or b"{}")
        assert doc.get("status") == "success", f"{path} {params}: {doc}"
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) ``expr`` gives now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = Path("/tmp") / f"ar-prometheus-{os.getpid()}"
    base.mkdir(mode=0o755)
    certs = make_ca(base / "certs")
    repos = base / "repos"
    make_repo(repos / "demo.git", {"app.py": "x = 1\n"}, "base")
    heads = []
    for i in range(2):
        branch = f"topic{i}"
        subprocess.run(
            ["git", "--git-dir", str(repos / "demo.git"), "branch", branch, "main"], check=True
        )
        change = {"app.py": f"x = {i + 2}\n"}  # a diff for the LLM to review
        heads.append(commit(repos / "demo.git", change, branch, branch=branch))
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    home = tmp_path_factory.mktemp("prometheus-home")
    with GitHttpsServer(repos, certs) as git, FakeForgejo(token=TOKEN) as forge:
        yield {"git": git, "forge": forge, "heads": heads, "home": home, "ca": certs.ca_cert}
    shutil.rmtree(base, ignore_errors=True)


def scrape(gw: Gateway) -> str:
    with urllib.request.urlopen(gw.url("/metrics"), timeout=10) as response:
        return response.read().decode()


def total(prom: Prometheus, expr: str) -> float:
    return sum(float(s["value"][1]) for s in prom.query(expr))


@needs_root
def test_a_real_prometheus_evaluates_every_rule_and_panel_on_a_live_gateway(
    app: Path, world: dict, tmp_path: Path
) -> None:
    forge: FakeForgejo = world["forge"]
    answer = {"findings": [], "summary": "fine"}
    with FakeOpenAI() as llm:
        gw = Gateway(app, world, LLM_BASE_URL=llm.url, LLM_API_KEY="sk-test-key-0123456789",
                     AR_REVIEW_CONCURRENCY="1")  # fmt: skip
        prom = None
        try:
            prom = Prometheus(tmp_path, f"127.0.0.1:{gw.port}", RULES)
            # the counters' values before the traffic, or rate() has nothing to start from
            # (Prometheus syncs new targets every 5 s)
            prom.wait("the first scrape", lambda: prom.query("auto_review_build_info"))
            # a review that succeeds, then one whose LLM request the server refuses (400:
            # not retried, the job fails for good), then a forged delivery
            good, bad = world["heads"]
            for number, head in ((1, good), (2, bad)):  # the PRs the forge serves
                forge.set_pull("acme", "demo", number, head)
            llm.script(json.dumps(answer))
            assert deliver(gw, pr_event(world, 1, good))[0] == 202
            reviewed = lambda: final_states(forge).get(good, [])[-1:] == ["success"]  # noqa: E731
            wait_until(reviewed, change_fds=[forge.changed_fd], timeout=60, what="the review")
            llm.script(Reply(400, error_body("no such model", "invalid_request_error")))
            assert deliver(gw, pr_event(world, 2, bad))[0] == 202
            failed = 'auto_review_reviews_failed_total{cause="reviewer"} 1'
            prom.wait("the failed job", lambda: failed in scrape(gw).splitlines(),
                      change_fds=(forge.changed_fd,))  # fmt: skip
            assert deliver(gw, pr_event(world, 3, bad), secret="forged")[0] == 401
            assert len(llm.requests) == 2

            # the scrapes and rule evaluations that saw all of it (waited for, not slept)
            prom.wait("the failure in a recorded ratio", lambda: total(
                prom, "job:auto_review_reviews_failed_per_finished:ratio_rate5m") > 0)  # fmt: skip
            prom.wait("the bad signature in a recorded rate", lambda: total(
                prom, "job:auto_review_signature_failures:rate5m") > 0)  # fmt: skip
            prom.wait("an LLM p95", lambda: prom.query(
                "job:auto_review_llm_request_duration_seconds:p95_rate5m"))  # fmt: skip

            assert [t["health"] for t in prom.api("targets")["activeTargets"]] == ["up"]
            for group in prom.api("rules")["groups"]:
                for rule in group["rules"]:
                    assert rule["health"] == "ok", rule

            empty = [name for name in recordings() if not prom.query(name)]
            assert empty == [], f"recording rules without data: {empty}"
            empty = [name for name, expr in panel_queries().items() if not prom.query(expr)]
            assert empty == [], f"dashboard queries without data: {empty}"
            firing = {name for name, rule in alerts().items() if prom.query(rule["expr"])}
            assert firing == {
                "AutoReviewJobFailureRatioHigh",  # 1 of 2 reviews failed
                "AutoReviewLLMErrorsHigh",  # 1 of 2 LLM requests failed
                "AutoReviewWebhookSignatureFailures",
            }, firing
            by_kind = prom.query("sum by (kind) (auto_review_llm_tokens_total)")
            tokens = {s["metric"]["kind"]: float(s["value"][1]) for s in by_kind}
            assert tokens["prompt"] == 100 and tokens["completion"] > 0  # the one answer
            [info] = prom.query("auto_review_build_info")
            assert info["metric"]["isolation"] == "runc"
            assert info["metric"]["bundle_digest"].startswith("sha256:")
            assert total(prom, "auto_review_ready") == 1
            causes = {s["metric"].get("cause") for s in prom.query("auto_review_llm_errors_total")}
            assert "client_error" in causes
        except AssertionError as exc:
            said = "".join(line for line in gw.errors if "GET /metrics" not in line)
            raise AssertionError(f"{exc}\ngateway stderr (less scrapes):\n{said[-3000:]}") from None
        finally:
            if prom is not None:
                prom.stop()
            assert gw.stop() in (0, 143)
