#!/usr/bin/env bash
# Checks the deployment files without Docker, systemd or nginx running (part of `make test`):
#
#  1. compose.yaml against the Compose Specification JSON schema: the copy vendored in
#     check-jsonschema (PyPI), installed into .local/venv-deploy on first use (~15 s), then
#     offline;
#  2. compose.yaml against the project: the api and worker commands equal what scripts/run.sh
#     (`make run`) starts, the worker scales (no container_name, no published port), the health
#     checks probe the ports the services bind, the stop grace period outlasts the worker's,
#     bind-mounted files exist, every variable set for api/worker is one the code reads;
#  3. .env.example lists every variable the code reads (shared/src/config.rs and any env
#     lookup in api/, worker/, shared/);
#  4. the Dockerfile builds and exposes what compose runs;
#  5. the systemd units (`systemd-analyze verify`, any warning fails), when systemd-analyze is
#     installed;
#  6. the nginx example (`nginx -t` with a throw-away certificate), with the nginx in PATH or
#     Debian's nginx package unpacked (not installed) into .local/nginx; skipped when neither
#     can be had.
#  7. the Kubernetes manifests in deploy/kubernetes/ against the Kubernetes API schemas
#     (kubernetes-validate, PyPI, strict: an unknown field fails too) for the oldest and newest
#     versions we support, after making sure a broken copy is rejected; then against the
#     project: commands equal to make run, probes on the ports the services bind, the worker's
#     termination grace above WORKER_SHUTDOWN_GRACE_SECS, secrets as files, IRSA, a
#     PodDisruptionBudget for each Deployment, every variable one .env.example lists.
#
# Exits non-zero with a message naming the file and the problem on the first failed step.
set -euo pipefail
root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root_dir"

say() { printf '[deploy] %s\n' "$*" >&2; }
die() { printf '[deploy] FAIL: %s\n' "$*" >&2; exit 1; }

venv="$root_dir/.local/venv-deploy"
check_jsonschema_version=0.39.0
kubernetes_validate_version=1.37.0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# ---------- 1. Compose Specification schema ----------
if [ "$("$venv/bin/check-jsonschema" --version 2>/dev/null || true)" != "check-jsonschema, version $check_jsonschema_version" ] \
   || [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null || true)" != "$kubernetes_validate_version" ]; then
  say "installing check-jsonschema $check_jsonschema_version and kubernetes-validate $kubernetes_validate_version into $venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing the Debian package python3-venv"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null; } \
        || die "apt-get install python3-venv failed"
    fi
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "check-jsonschema==$check_jsonschema_version" \
    "kubernetes-validate==$kubernetes_validate_version" >&2 \
    || die "pip install check-jsonschema==$check_jsonschema_version kubernetes-validate==$kubernetes_validate_version failed"
fi
say "compose.yaml against the Compose Specification schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml >&2 \
  || die "compose.yaml does not follow the Compose Specification (errors above)"

# ---------- 2-4. compose.yaml, .env.example and the Dockerfile against the code ----------
say "compose.yaml, .env.example and Dockerfile against scripts/run.sh and the code"
"$venv/bin/python" - <<'PY'
import pathlib
import re
import shlex
import sys

from ruamel.yaml import YAML

problems = []


def problem(msg):
    problems.append(msg)


# --- the commands `make run` starts (scripts/run.sh): lines that run "$bin/statement-…" ---
run_sh = pathlib.Path("scripts/run.sh").read_text()
started = {}
for line in run_sh.splitlines():
    m = re.match(r'^\s*(?:exec\s+)?"\$bin/(statement-[a-z]+)"(.*?)\s*&?\s*$', line)
    if m:
        started[m.group(1)] = [m.group(1)] + shlex.split(m.group(2))
for binary in ("statement-api", "statement-worker"):
    if binary not in started:
        problem(f'scripts/run.sh: no line starting "$bin/{binary}" found; '
                "update scripts/check-deploy.sh if run.sh starts it differently")

# --- compose.yaml ---
compose = YAML(typ="safe").load(pathlib.Path("compose.yaml").read_text())
services = compose.get("services") or {}


def command_of(svc):
    cmd = svc.get("command")
    if cmd is None:
        return None
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def port_of(bind):
    m = re.search(r":(\d+)$", bind or "")
    return m.group(1) if m else None


def healthcheck_text(svc):
    test = (svc.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else (test or "")


def seconds(duration):
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration)):
        total += float(value) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


by_binary = {}
for name, svc in services.items():
    cmd = command_of(svc)
    if cmd and cmd[0].rsplit("/", 1)[-1] in ("statement-api", "statement-worker"):
        by_binary.setdefault(cmd[0].rsplit("/", 1)[-1], []).append((name, cmd))

for binary, expected in started.items():
    found = by_binary.get(binary, [])
    if len(found) != 1:
        problem(f"compose.yaml: expected exactly one service running {binary}, found "
                f"{[n for n, _ in found] or 'none'}")
        continue
    name, cmd = found[0]
    cmd = [cmd[0].rsplit("/", 1)[-1]] + cmd[1:]
    if cmd != expected:
        problem(f"compose.yaml: service {name!r} runs {shlex.join(cmd)!r} but scripts/run.sh "
                f"(make run) runs {shlex.join(expected)!r}: keep them identical")

api_name = by_binary["statement-api"][0][0] if by_binary.get("statement-api") else None
worker_name = by_binary["statement-worker"][0][0] if by_binary.get("statement-worker") else None
api = services.get(api_name) if api_name else None
worker = services.get(worker_name) if worker_name else None

if worker is not None:
    if "container_name" in worker:
        problem(f"compose.yaml: service {worker_name!r} has container_name: it cannot be scaled "
                "(docker compose up --scale worker=N)")
    if worker.get("ports"):
        problem(f"compose.yaml: service {worker_name!r} publishes ports: replicas would clash; "
                "scrape the workers over the compose network instead")
    env = env_of(worker)
    port = port_of(env.get("WORKER_METRICS_BIND"))
    if not port or not env.get("WORKER_METRICS_BIND", "").startswith("0.0.0.0:"):
        problem(f"compose.yaml: service {worker_name!r} must set WORKER_METRICS_BIND=0.0.0.0:<port>")
    elif f":{port}/metrics" not in healthcheck_text(worker):
        problem(f"compose.yaml: the health check of {worker_name!r} must GET :{port}/metrics "
                "(WORKER_METRICS_BIND)")
    grace = float(env.get("WORKER_SHUTDOWN_GRACE_SECS") or 30)
    stop = seconds(worker.get("stop_grace_period", "10s"))
    if stop <= grace:
        problem(f"compose.yaml: stop_grace_period of {worker_name!r} ({stop:g}s) must exceed "
                f"WORKER_SHUTDOWN_GRACE_SECS ({grace:g}s)")

if api is not None:
    env = env_of(api)
    port = port_of(env.get("API_BIND"))
    if not port or not env.get("API_BIND", "").startswith("0.0.0.0:"):
        problem("compose.yaml: the API service must set API_BIND=0.0.0.0:<port>")
    elif f":{port}/ready" not in healthcheck_text(api):
        problem(f"compose.yaml: the API health check must GET :{port}/ready (API_BIND)")

for name, svc in services.items():
    if "restart" not in svc:
        problem(f"compose.yaml: service {name!r} has no restart policy")
    deps = svc.get("depends_on") or {}
    for dep in deps if isinstance(deps, (list, dict)) else []:
        if dep not in services:
            problem(f"compose.yaml: service {name!r} depends on unknown service {dep!r}")
        elif isinstance(deps, dict) and (deps[dep] or {}).get("condition") == "service_healthy" \
                and "healthcheck" not in services[dep]:
            problem(f"compose.yaml: {name!r} waits for {dep!r} to be healthy, but {dep!r} has no health check")
    for vol in svc.get("volumes") or []:
        source = vol.split(":", 1)[0] if isinstance(vol, str) else (vol.get("source") or "")
        if source.startswith(("./", "../")) and not pathlib.Path(source).exists():
            problem(f"compose.yaml: service {name!r} mounts {source}, which does not exist")

# --- the variables the code reads ---
code_vars = {}
helper_call = re.compile(
    r'\b(?:var_or|parse_var|positive|secs|millis|days|var|var_os)\(\s*"([A-Z][A-Z0-9_]*)"')
clap_env = re.compile(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"')
for src in sorted(pathlib.Path(".").glob("*/src/**/*.rs")):
    if src.parts[0] not in ("api", "worker", "shared"):
        continue
    text = src.read_text()
    names = set(helper_call.findall(text)) | set(clap_env.findall(text))
    if src.name == "config.rs":
        # Every NAME_LIKE_THIS literal in the configuration module is a variable name.
        names |= set(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"', text))
    if "from_default_env" in text:
        names.add("RUST_LOG")  # tracing's EnvFilter
    for n in names:
        code_vars.setdefault(n, str(src))
# Set by the OS or the container runtime, not configuration.
not_configuration = {"HOSTNAME", "USER"}

env_example = pathlib.Path(".env.example").read_text()
listed = set(re.findall(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", env_example, re.M))
for n in sorted(set(code_vars) - listed - not_configuration):
    problem(f".env.example: {n} (read in {code_vars[n]}) is missing")
unread = sorted(listed - set(code_vars))
if unread:
    print(f"[deploy] note: .env.example lists variables no code reads (yet): {', '.join(unread)}",
          file=sys.stderr)

for name in (n for n in (api_name, worker_name) if n):
    for n in env_of(services[name]):
        if n not in listed:
            problem(f"compose.yaml: service {name!r} sets {n}, which .env.example does not list "
                    "(a typo, or a variable to document)")

# --- the Dockerfile ---
dockerfile = pathlib.Path("Dockerfile").read_text() if pathlib.Path("Dockerfile").exists() else ""
if not dockerfile:
    problem("Dockerfile: missing")
for binary in started:
    if f"--bin {binary}" not in dockerfile:
        problem(f"Dockerfile: does not build {binary} (cargo build --bin {binary})")
exposed = set(re.findall(r"\d+", " ".join(re.findall(r"^EXPOSE\s+(.*)$", dockerfile, re.M))))
for svc, var in ((api, "API_BIND"), (worker, "WORKER_METRICS_BIND")):
    port = port_of(env_of(svc).get(var)) if svc is not None else None
    if port and port not in exposed:
        problem(f"Dockerfile: EXPOSE lacks {port} ({var} in compose.yaml)")

# --- the worker unit's stop timeout against the shutdown grace ---
unit = pathlib.Path("deploy/systemd/statement-worker@.service")
if unit.exists():
    m = re.search(r"^TimeoutStopSec=(\d+)\s*$", unit.read_text(), re.M)
    grace = re.search(r"^\s*#?\s*WORKER_SHUTDOWN_GRACE_SECS=(\d+)", env_example, re.M)
    if not m or (grace and int(m.group(1)) <= int(grace.group(1))):
        problem(f"{unit}: TimeoutStopSec (in seconds) must exceed WORKER_SHUTDOWN_GRACE_SECS")

if problems:
    for p in problems:
        print(f"[deploy] FAIL: {p}", file=sys.stderr)
    sys.exit(1)
PY

# ---------- 5. systemd units ----------
units=(deploy/systemd/statement-api.service deploy/systemd/statement-worker@.service)
if command -v systemd-analyze >/dev/null; then
  say "systemd units (systemd-analyze verify)"
  # Verified as installed, except that ExecStart's binaries are stand-ins in a scratch
  # directory (verify insists they exist); the template as an instance.
  mkdir -p "$tmp/systemd/bin"
  for b in statement-api statement-worker; do printf '#!/bin/sh\n' >"$tmp/systemd/bin/$b"; chmod +x "$tmp/systemd/bin/$b"; done
  sed "s#/usr/local/bin/#$tmp/systemd/bin/#g" "${units[0]}" >"$tmp/systemd/statement-api.service"
  sed "s#/usr/local/bin/#$tmp/systemd/bin/#g" "${units[1]}" >"$tmp/systemd/statement-worker@9464.service"
  if ! out="$(systemd-analyze verify "$tmp/systemd/statement-api.service" "$tmp/systemd/statement-worker@9464.service" 2>&1)" \
     || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    die "systemd-analyze verify: the units in deploy/systemd/ have problems (above)"
  fi
else
  say "skipped: systemd-analyze verify (systemd-analyze is not installed)"
fi

# ---------- 6. nginx example ----------
nginx_bin="$(command -v nginx || true)"
local_nginx="$root_dir/.local/nginx/usr/sbin/nginx"
if [ -z "$nginx_bin" ] && [ ! -x "$local_nginx" ] && command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
  # Debian's package, unpacked rather than installed: no service starts, nothing listens.
  say "unpacking Debian's nginx package into .local/nginx (for nginx -t only)"
  mkdir -p "$tmp/deb"
  if (cd "$tmp/deb" && timeout 60 apt-get download -q nginx >/dev/null 2>&1) \
     && dpkg -x "$tmp"/deb/nginx_*.deb "$root_dir/.local/nginx" 2>/dev/null; then :; else
    say "could not download Debian's nginx package (no apt lists? run apt-get update)"
  fi
fi
[ -z "$nginx_bin" ] && [ -x "$local_nginx" ] && nginx_bin="$local_nginx"
if [ -n "$nginx_bin" ] && command -v openssl >/dev/null; then
  say "nginx example (nginx -t)"
  ngx="$tmp/nginx"
  mkdir -p "$ngx/logs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=exports.example.com \
    -keyout "$ngx/privkey.pem" -out "$ngx/fullchain.pem" >/dev/null 2>&1 \
    || die "openssl could not make the test certificate"
  sed -e "s#/etc/letsencrypt/live/exports.example.com/#$ngx/#g" -e "s#/var/log/nginx/#$ngx/logs/#g" \
    deploy/nginx/statement-export.conf >"$ngx/site.conf"
  cat >"$ngx/nginx.conf" <<EOF
pid $ngx/nginx.pid;
error_log $ngx/logs/error.log;
events {}
http {
    client_body_temp_path $ngx/client_body;
    proxy_temp_path $ngx/proxy;
    fastcgi_temp_path $ngx/fastcgi;
    uwsgi_temp_path $ngx/uwsgi;
    scgi_temp_path $ngx/scgi;
    access_log off;
    include $ngx/site.conf;
}
EOF
  if ! out="$("$nginx_bin" -t -q -p "$ngx" -e "$ngx/logs/error.log" -c "$ngx/nginx.conf" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "nginx -t: deploy/nginx/statement-export.conf is not valid (above)"
  fi
else
  say "skipped: nginx -t (needs nginx and openssl)"
fi

# ---------- 7. Kubernetes manifests ----------
k8s_manifests=(deploy/kubernetes/*.yaml)
# The oldest Kubernetes release we support (EKS extended support) and the newest the validator knows.
k8s_versions=(1.30.0 1.37.0)
# The validator must be able to fail: a copy with a misspelled field and a mistyped value is
# refused, or the check is not checking anything.
sed -e 's/terminationGracePeriodSeconds:/terminationGracePeriodSecond:/' -e 's/replicas: [0-9]*/replicas: two/' \
  deploy/kubernetes/worker.yaml >"$tmp/broken-worker.yaml"
if "$venv/bin/kubernetes-validate" --strict --quiet --no-warn "$tmp/broken-worker.yaml" >/dev/null 2>&1; then
  die "kubernetes-validate accepted a broken manifest (a misspelled field): the check below would prove nothing"
fi
for version in "${k8s_versions[@]}"; do
  say "deploy/kubernetes/ against the Kubernetes $version API (kubernetes-validate --strict)"
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${k8s_manifests[@]}" >&2 \
    || die "deploy/kubernetes/: a manifest is not valid Kubernetes $version (above)"
done
say "deploy/kubernetes/ against scripts/run.sh, .env.example and the service's settings"
"$venv/bin/python" - "${k8s_manifests[@]}" <<'PY'
import pathlib
import re
import shlex
import sys

from ruamel.yaml import YAML

problems = []
problem = problems.append

docs = []
for path in sys.argv[1:]:
    for doc in YAML(typ="safe").load_all(pathlib.Path(path).read_text()):
        if doc:
            docs.append((path, doc))
by_kind = {}
for path, doc in docs:
    by_kind.setdefault(doc["kind"], []).append((path, doc))

started = {}
for line in pathlib.Path("scripts/run.sh").read_text().splitlines():
    m = re.match(r'^\s*(?:exec\s+)?"\$bin/(statement-[a-z]+)"(.*?)\s*&?\s*$', line)
    if m:
        started[m.group(1)] = [m.group(1)] + shlex.split(m.group(2))
env_example = pathlib.Path(".env.example").read_text()
listed = set(re.findall(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=", env_example, re.M))

config_maps = {d["metadata"]["name"]: d.get("data") or {} for _, d in by_kind.get("ConfigMap", [])}
accounts = {d["metadata"]["name"]: d for _, d in by_kind.get("ServiceAccount", [])}
for path, cm in by_kind.get("ConfigMap", []):
    for name in cm.get("data") or {}:
        if name not in listed:
            problem(f"{path}: ConfigMap {cm['metadata']['name']!r} sets {name}, which .env.example does not list")


def port_of(bind):
    m = re.search(r":(\d+)$", bind or "")
    return int(m.group(1)) if m else None


def labels_match(selector, labels):
    wanted = (selector or {}).get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


deployments = {}
for path, dep in by_kind.get("Deployment", []):
    name = dep["metadata"]["name"]
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    if not labels_match(dep["spec"].get("selector"), labels):
        problem(f"{path}: Deployment {name!r}: its selector does not match its pod labels")
    (container,) = pod["containers"]
    cmd = container.get("command") or []
    binary = cmd[0].rsplit("/", 1)[-1] if cmd else None
    if binary not in started:
        problem(f"{path}: Deployment {name!r} runs {cmd!r}, not a binary scripts/run.sh starts")
        continue
    if [binary] + cmd[1:] != started[binary]:
        problem(f"{path}: Deployment {name!r} runs {shlex.join(cmd)!r} but scripts/run.sh (make run) runs "
                f"{shlex.join(started[binary])!r}: keep them identical")
    deployments[binary] = (path, dep, pod, container, labels)

    # Settings: the ConfigMap's, then the container's own (which win).
    env = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        if ref not in config_maps:
            problem(f"{path}: Deployment {name!r} reads ConfigMap {ref!r}, which deploy/kubernetes/ does not define")
        env.update(config_maps.get(ref, {}))
    for var in container.get("env") or []:
        env[var["name"]] = var.get("value")
        if var["name"] not in listed:
            problem(f"{path}: Deployment {name!r} sets {var['name']}, which .env.example does not list")

    # Secrets: never a value in the manifest; each *_FILE inside a mounted Secret volume.
    for secret in ("DATABASE_URL", "SOURCE_DATABASE_URL", "SIGNING_SECRET", "S3_SECRET_ACCESS_KEY"):
        if env.get(secret):
            problem(f"{path}: Deployment {name!r} sets {secret} in plain text: mount it as a file ({secret}_FILE)")
    secret_volumes = {v["name"] for v in pod.get("volumes") or [] if "secret" in v}
    secret_dirs = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts") or []
                   if m["name"] in secret_volumes]
    for required in ("DATABASE_URL_FILE", "SOURCE_DATABASE_URL_FILE"):
        if required not in env:
            problem(f"{path}: Deployment {name!r} does not set {required}")
    for var, value in env.items():
        if var.endswith("_FILE") and var != "EXPORT_TABLES_FILE" and not any((value or "").startswith(d) for d in secret_dirs):
            problem(f"{path}: Deployment {name!r}: {var}={value} is not inside a mounted Secret volume")

    # IRSA: the pods run as the annotated service account.
    account = accounts.get(pod.get("serviceAccountName"))
    if account is None:
        problem(f"{path}: Deployment {name!r} does not run as a ServiceAccount defined in deploy/kubernetes/")
    elif "eks.amazonaws.com/role-arn" not in (account["metadata"].get("annotations") or {}):
        problem(f"{path}: ServiceAccount {account['metadata']['name']!r} lacks eks.amazonaws.com/role-arn (IRSA)")

    # Probes on the port the process binds.
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}

    def probe(kind):
        get = (container.get(kind) or {}).get("httpGet") or {}
        port = get.get("port")
        return get.get("path"), ports.get(port, port)

    if binary == "statement-api":
        port = port_of(env.get("API_BIND"))
        if not port or not env["API_BIND"].startswith("0.0.0.0:"):
            problem(f"{path}: Deployment {name!r} must set API_BIND=0.0.0.0:<port>")
        for kind, path_ in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            if probe(kind) != (path_, port):
                problem(f"{path}: Deployment {name!r}: {kind} must GET {path_} on port {port} (API_BIND), "
                        f"not {probe(kind)}")
    else:
        port = port_of(env.get("WORKER_METRICS_BIND"))
        if not port or not env["WORKER_METRICS_BIND"].startswith("0.0.0.0:"):
            problem(f"{path}: Deployment {name!r} must set WORKER_METRICS_BIND=0.0.0.0:<port>")
        if probe("livenessProbe") != ("/metrics", port):
            problem(f"{path}: Deployment {name!r}: livenessProbe must GET /metrics on port {port} "
                    "(WORKER_METRICS_BIND), the worker's only endpoint")
        grace = float(env.get("WORKER_SHUTDOWN_GRACE_SECS") or 30)
        margin = 10
        stop = pod.get("terminationGracePeriodSeconds", 30)
        if stop < grace + margin:
            problem(f"{path}: Deployment {name!r}: terminationGracePeriodSeconds ({stop}) must be at least "
                    f"WORKER_SHUTDOWN_GRACE_SECS ({grace:g}) + {margin} s, or running exports are killed "
                    "before they are handed back to the queue")

    # A PodDisruptionBudget for the pods.
    if not any(labels_match(pdb["spec"].get("selector"), labels) for _, pdb in by_kind.get("PodDisruptionBudget", [])):
        problem(f"{path}: no PodDisruptionBudget selects the pods of Deployment {name!r}")

for binary in started:
    if binary not in deployments:
        problem(f"deploy/kubernetes/: no Deployment runs {binary}")
if "statement-api" in deployments:
    api_labels = deployments["statement-api"][4]
    if not any(labels_match({"matchLabels": s["spec"].get("selector")}, api_labels) for _, s in by_kind.get("Service", [])):
        problem("deploy/kubernetes/: no Service selects the API's pods")

if problems:
    for p in problems:
        print(f"[deploy] FAIL: {p}", file=sys.stderr)
    sys.exit(1)
PY

say "deployment files OK"
