#!/usr/bin/env python3
"""Check docker-compose.yml and the files it uses, without a Docker engine.

    python3 deploy/tools/check_compose.py [--root DIR]

Reads the compose file with `docker compose config` when a Docker client with the compose
plugin is installed, else with PyYAML (pinned in proxy/tests/python/requirements.txt), and
checks that:

- the services postgres, keyring-init, pgveil, prometheus and grafana exist, each with an
  image or a build context holding a Dockerfile, and depends_on names real services;
- every bind-mounted file or directory exists in the repository, every named volume is
  declared, and no host port is published twice;
- the Dockerfile builds `-p pgveil` in release mode on a Rust image no older than the
  workspace's rust-version;
- the pgveil config file mounted at the path `serve --config` reads uses only keys that
  proxy/src/config/ accepts (read from its serde structs, `deny_unknown_fields`), with
  valid durations, numbers and enum values; that upstream.host is the postgres service, that
  listen and metrics.listen bind every interface on the published container ports, and that
  the policy and keyring paths lie in mounts (the policy file existing in the repository);
- every login the policy maps to a policy role, and the catalog user, is created by the
  postgres init scripts;
- prometheus.yml scrapes job "pgveil" at <pgveil service>:<metrics port>/metrics, and its
  rule files are mounted beside it;
- Grafana's provisioned data source points at the prometheus service with uid "prometheus",
  and the dashboard provider's path is where the dashboard JSON is mounted.

Exit status 0 when everything holds, 1 with one line per problem otherwise.
With PGVEIL_BIN set to a pgveil binary, also runs `pgveil policy check` on the policy.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    print("check_compose: needs PyYAML: python3 -m pip install -r proxy/tests/python/requirements.txt",
          file=sys.stderr)
    sys.exit(2)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICES = ("postgres", "keyring-init", "pgveil", "prometheus", "grafana")
PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def read_yaml(path):
    return yaml.safe_load(read(path)) or {}


# ---------------------------------------------------------------- config.rs: accepted keys

def rust_structs(source):
    """{struct name: (attrs text, body)} for every struct in a Rust source."""
    out = {}
    for m in re.finditer(r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?struct\s+(\w+)\s*\{(.*?)\n\}", source, re.S):
        out[m.group(2)] = (m.group(1), m.group(3))
    return out


def rust_enums(source):
    out = {}
    for m in re.finditer(r"((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?enum\s+(\w+)\s*\{(.*?)\n\}", source, re.S):
        attrs, name, body = m.groups()
        variants = []
        for line in body.splitlines():
            line = line.strip()
            if not line or line.startswith(("//", "#")):
                continue
            v = re.match(r"(\w+)\s*,?$", line)
            if v:
                variants.append(v.group(1))
        rename = re.search(r'rename_all\s*=\s*"([\w-]+)"', attrs)
        out[name] = [rename_variant(v, rename.group(1) if rename else None) for v in variants]
    return out


def rename_variant(name, rule):
    words = re.findall(r"[A-Z][a-z0-9]*", name) or [name]
    if rule == "kebab-case":
        return "-".join(w.lower() for w in words)
    if rule == "snake_case":
        return "_".join(w.lower() for w in words)
    if rule == "lowercase":
        return name.lower()
    return name


def accepted_keys(config_rs):
    """The config file's key tree: {key: subtree dict | (kind, detail)} from FileConfig down.
    `config_rs` is the config module's directory (all its files are read) or one file."""
    if os.path.isdir(config_rs):
        names = sorted(n for n in os.listdir(config_rs) if n.endswith(".rs"))
        parts = []
        for n in names:
            with open(os.path.join(config_rs, n), encoding="utf-8") as f:
                parts.append(f.read())
        source = "\n".join(parts)
    else:
        with open(config_rs, encoding="utf-8") as f:
            source = f.read()
    structs = rust_structs(source)
    enums = rust_enums(source)

    def tree(name):
        attrs, body = structs[name]
        if "deny_unknown_fields" not in attrs:
            problem("%s: struct %s does not deny unknown fields; the key check assumes it does"
                    % (os.path.relpath(config_rs, ROOT), name))
        keys = {}
        pending_attrs = ""
        for line in body.splitlines():
            line = line.strip()
            if line.startswith("#["):
                pending_attrs += line
                continue
            m = re.match(r"(?:pub(?:\([^)]*\))?\s+)?(\w+)\s*:\s*(?:Option<)?([\w:]+)", line)
            if not m:
                continue
            field, ty = m.groups()
            rename = re.search(r'rename\s*=\s*"([^"]+)"', pending_attrs)
            key = rename.group(1) if rename else field
            if ty in structs:
                keys[key] = tree(ty)
            elif "de_duration" in pending_attrs:
                keys[key] = ("duration", None)
            elif ty in enums:
                keys[key] = ("enum", enums[ty])
            elif ty in ("u8", "u16", "u32", "u64", "usize", "i32", "i64"):
                keys[key] = ("int", ty)
            elif ty == "bool":
                keys[key] = ("bool", None)
            else:
                keys[key] = ("string", ty)
            pending_attrs = ""
        return keys

    if "FileConfig" not in structs:
        problem("proxy/src/config/: struct FileConfig not found; update check_compose.py")
        return {}
    keys = tree("FileConfig")
    # The parser must at least find the keys this stack relies on.
    for path in ("listen", "upstream.host", "upstream.port", "metrics.listen", "policy", "keyring",
                 "catalog.user"):
        node = keys
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            problem("proxy/src/config/: key %s not found by the parser; update check_compose.py" % path)
    return keys


DURATION = re.compile(r"^(0|(\d+\s*(ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d|days?)\s*)+)$")


def check_config_values(data, keys, name, path=""):
    if not isinstance(data, dict):
        problem("%s: %s must be a mapping" % (name, path or "the file"))
        return
    for k, v in data.items():
        full = (path + "." if path else "") + str(k)
        if k not in keys:
            problem("%s: %s: unknown key (pgveil accepts: %s)" % (name, full, ", ".join(sorted(keys))))
            continue
        spec = keys[k]
        if isinstance(spec, dict):
            check_config_values(v, spec, name, full)
            continue
        kind, detail = spec
        if kind == "duration" and not DURATION.match(str(v).strip()):
            problem("%s: %s: %r is not a duration (15s, 500ms, 2m, 0)" % (name, full, v))
        elif kind == "enum" and str(v) not in detail:
            problem("%s: %s: %r is not one of %s" % (name, full, v, ", ".join(detail)))
        elif kind == "int" and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            problem("%s: %s: %r is not a non-negative integer" % (name, full, v))
        elif kind == "bool" and not isinstance(v, bool):
            problem("%s: %s: %r is not true or false" % (name, full, v))
        elif kind == "string" and not isinstance(v, (str, int, float)):
            problem("%s: %s: %r is not a string" % (name, full, v))


# ---------------------------------------------------------------- compose parsing

def load_compose(root):
    path = os.path.join(root, "docker-compose.yml")
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        out = subprocess.run([docker, "compose", "-f", path, "config", "--format", "json"],
                             cwd=root, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            problem("docker compose config: %s" % " ".join(out.stderr.split()))
        else:
            return json.loads(out.stdout), "docker compose config"
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f), "PyYAML"


def mounts(service):
    """(type, source, target) for each volume entry, short or long syntax."""
    out = []
    for v in service.get("volumes", []) or []:
        if isinstance(v, dict):
            out.append((v.get("type", "volume"), v.get("source", ""), v.get("target", "")))
            continue
        parts = v.split(":")
        src, dst = parts[0], parts[1] if len(parts) > 1 else parts[0]
        kind = "bind" if src.startswith((".", "/", "~")) else "volume"
        out.append((kind, src, dst))
    return out


def repo_path(root, source):
    """A bind source as a path in the repository (docker compose config makes it absolute)."""
    if os.path.isabs(source):
        return source
    return os.path.normpath(os.path.join(root, source))


def ports(service):
    """(host ip, host port, container port) for each published port."""
    out = []
    for p in service.get("ports", []) or []:
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), str(p.get("published", "")), str(p.get("target", ""))))
            continue
        parts = str(p).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", "", parts[0]))
    return out


def host_file(root, service, container_path):
    """The repository file mounted at container_path in service, or None."""
    best = None
    for kind, src, dst in mounts(service):
        if kind != "bind":
            continue
        dst = dst.rstrip("/")
        if container_path == dst or container_path.startswith(dst + "/"):
            if best is None or len(dst) > len(best[1]):
                best = (src, dst)
    if best is None:
        return None
    src, dst = best
    return os.path.normpath(os.path.join(repo_path(root, src), os.path.relpath(container_path, dst)))


def in_volume(service, container_path):
    for kind, _, dst in mounts(service):
        dst = dst.rstrip("/")
        if kind == "volume" and (container_path == dst or container_path.startswith(dst + "/")):
            return True
    return False


def port_of(addr):
    m = re.match(r"^(.*):(\d+)$", str(addr))
    return (m.group(1).strip("[]"), m.group(2)) if m else (None, None)


def command_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else str(value).split()


# ---------------------------------------------------------------- the checks

def check(root):
    compose, how = load_compose(root)
    services = compose.get("services", {}) or {}
    declared_volumes = set((compose.get("volumes") or {}).keys())
    for name in SERVICES:
        if name not in services:
            problem("docker-compose.yml: service %s missing" % name)
    published = {}
    for name, svc in services.items():
        if not svc.get("image") and not svc.get("build"):
            problem("docker-compose.yml: %s: neither image nor build" % name)
        build = svc.get("build")
        if build:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.isfile(os.path.join(repo_path(root, ctx), dockerfile)):
                problem("docker-compose.yml: %s: build context %s has no %s" % (name, ctx, dockerfile))
        deps = svc.get("depends_on") or []
        for dep in (deps.keys() if isinstance(deps, dict) else deps):
            if dep not in services:
                problem("docker-compose.yml: %s depends on unknown service %s" % (name, dep))
        for kind, src, dst in mounts(svc):
            if kind == "bind":
                if not os.path.exists(repo_path(root, src)):
                    problem("docker-compose.yml: %s mounts %s, which does not exist" % (name, src))
            elif kind == "volume" and src and src not in declared_volumes:
                problem("docker-compose.yml: %s uses volume %s, not declared under volumes:" % (name, src))
        for ip, host, _ in ports(svc):
            if host:
                key = (ip or "0.0.0.0", host)
                if key in published:
                    problem("docker-compose.yml: host port %s published by %s and %s"
                            % (host, published[key], name))
                published[key] = name

    check_dockerfile(root)
    pg = services.get("postgres", {})
    roles = created_roles(root, pg)
    pgveil = services.get("pgveil")
    metrics_port = None
    if pgveil:
        metrics_port = check_pgveil(root, pgveil, services, roles)
    prom = services.get("prometheus")
    if prom:
        check_prometheus(root, prom, metrics_port)
    graf = services.get("grafana")
    if graf:
        check_grafana(root, graf)
    return how


def check_dockerfile(root):
    path = os.path.join(root, "Dockerfile")
    if not os.path.isfile(path):
        problem("Dockerfile missing")
        return
    text = read(path)
    if not re.search(r"cargo build[^\n]*--release[^\n]*-p pgveil", text):
        problem("Dockerfile: no `cargo build --release ... -p pgveil`")
    m = re.search(r"^FROM\s+rust:(\d+)\.(\d+)", text, re.M)
    want = re.search(r'rust-version\s*=\s*"(\d+)\.(\d+)', read(os.path.join(root, "Cargo.toml")))
    if not m:
        problem("Dockerfile: the builder stage is not FROM rust:<version>")
    elif want and (int(m.group(1)), int(m.group(2))) < (int(want.group(1)), int(want.group(2))):
        problem("Dockerfile: rust:%s.%s is older than the workspace's rust-version %s.%s"
                % (m.group(1), m.group(2), want.group(1), want.group(2)))


def created_roles(root, pg):
    """Roles created by the postgres service's init scripts."""
    roles = set()
    for kind, src, dst in mounts(pg):
        if kind == "bind" and dst.startswith("/docker-entrypoint-initdb.d"):
            path = repo_path(root, src)
            files = [path] if os.path.isfile(path) else (
                [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [])
            for f in files:
                text = re.sub(r"--[^\n]*", "", read(f))
                roles |= set(re.findall(r"CREATE\s+(?:ROLE|USER)\s+\"?(\w+)", text, re.I))
    return roles


def check_pgveil(root, svc, services, roles):
    cmd = command_list(svc.get("command")) or ["serve", "--config", "/etc/pgveil/pgveil.yaml"]
    config_path = None
    for i, arg in enumerate(cmd):
        if arg in ("--config", "-c") and i + 1 < len(cmd):
            config_path = cmd[i + 1]
        elif arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
    if "serve" not in cmd or not config_path:
        problem("docker-compose.yml: pgveil: command is not `serve --config FILE`")
        return None
    host_cfg = host_file(root, svc, config_path)
    if not host_cfg or not os.path.isfile(host_cfg):
        problem("docker-compose.yml: pgveil: %s is not mounted from a repository file" % config_path)
        return None
    name = os.path.relpath(host_cfg, root)
    with open(host_cfg, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    keys = accepted_keys(os.path.join(root, "proxy", "src", "config"))
    check_config_values(cfg, keys, name)

    container_ports = {c for _, _, c in ports(svc)}
    upstream = (cfg.get("upstream") or {})
    if upstream.get("host") != "postgres" or "postgres" not in services:
        problem("%s: upstream.host is %r, not the compose service postgres" % (name, upstream.get("host")))
    if int(upstream.get("port", 5432)) != 5432:
        problem("%s: upstream.port %s is not postgres's 5432" % (name, upstream.get("port")))
    ip, listen_port = port_of(cfg.get("listen", "127.0.0.1:6432"))
    if ip not in ("0.0.0.0", "::"):
        problem("%s: listen %s is not reachable from other containers (use 0.0.0.0)" % (name, cfg.get("listen")))
    if listen_port not in container_ports:
        problem("docker-compose.yml: pgveil does not publish its listen port %s" % listen_port)
    metrics_listen = (cfg.get("metrics") or {}).get("listen", "127.0.0.1:9187")
    mip, metrics_port = port_of(metrics_listen)
    if mip not in ("0.0.0.0", "::"):
        problem("%s: metrics.listen %s cannot be scraped by the prometheus service (use 0.0.0.0)"
                % (name, metrics_listen))
    if metrics_port and metrics_port not in container_ports:
        problem("docker-compose.yml: pgveil does not publish its metrics port %s" % metrics_port)

    policy = cfg.get("policy")
    if policy:
        host_policy = host_file(root, svc, policy)
        if not host_policy or not os.path.isfile(host_policy):
            problem("%s: policy %s is not a repository file mounted into pgveil" % (name, policy))
        else:
            check_policy_logins(root, host_policy, roles)
        keyring = cfg.get("keyring")
        if not keyring:
            problem("%s: a policy needs a keyring" % name)
        elif not in_volume(svc, keyring) and not host_file(root, svc, keyring):
            problem("%s: keyring %s is in no volume of pgveil" % (name, keyring))
        else:
            init = services.get("keyring-init", {})
            if keyring not in " ".join(command_list(init.get("command"))):
                problem("docker-compose.yml: keyring-init does not create %s" % keyring)
            elif not in_volume(init, keyring):
                problem("docker-compose.yml: keyring-init does not write %s to a volume" % keyring)
        audit_file = (cfg.get("audit") or {}).get("file")
        if audit_file:
            if not in_volume(svc, audit_file):
                problem("%s: audit.file %s is in no volume of pgveil (the log would be lost with the container)"
                        % (name, audit_file))
            audit_dir = os.path.dirname(audit_file)
            if not re.search(r"install -d -o pgveil[^\n]*\s%s(\s|$)" % re.escape(audit_dir),
                             read(os.path.join(root, "Dockerfile"))):
                problem("Dockerfile: %s (the audit log's directory) is not created owned by pgveil"
                        % audit_dir)
        user = (cfg.get("catalog") or {}).get("user")
        if user and user not in roles:
            problem("%s: catalog.user %s is not created by the postgres init scripts" % (name, user))
        env = svc.get("environment") or {}
        env_keys = env.keys() if isinstance(env, dict) else [e.split("=")[0] for e in env]
        if "password" not in (cfg.get("catalog") or {}) and "PGVEIL_CATALOG_PASSWORD" not in env_keys:
            problem("docker-compose.yml: pgveil has no catalog password (PGVEIL_CATALOG_PASSWORD)")
    return metrics_port


def check_policy_logins(root, policy_path, roles):
    with open(policy_path, encoding="utf-8") as f:
        policy = yaml.safe_load(f) or {}
    for role, logins in (policy.get("roles") or {}).items():
        for login in logins or []:
            if any(c in str(login) for c in "*?["):
                if not any(re.fullmatch(str(login).replace("*", ".*").replace("?", "."), r) for r in roles):
                    problem("%s: role %s: no login created by the postgres init scripts matches %s"
                            % (os.path.relpath(policy_path, root), role, login))
            elif login not in roles:
                problem("%s: role %s: login %s is not created by the postgres init scripts"
                        % (os.path.relpath(policy_path, root), role, login))
    binary = os.environ.get("PGVEIL_BIN")
    if binary:
        out = subprocess.run([binary, "policy", "check", policy_path], capture_output=True, text=True)
        if out.returncode != 0:
            problem("pgveil policy check %s: %s" % (policy_path, (out.stderr or out.stdout).strip()))


def check_prometheus(root, svc, metrics_port):
    cmd = command_list(svc.get("command"))
    cfg_path = "/etc/prometheus/prometheus.yml"
    for arg in cmd:
        if arg.startswith("--config.file="):
            cfg_path = arg.split("=", 1)[1]
    host = host_file(root, svc, cfg_path)
    if not host or not os.path.isfile(host):
        problem("docker-compose.yml: prometheus: %s is not mounted from a repository file" % cfg_path)
        return
    name = os.path.relpath(host, root)
    cfg = read_yaml(host)
    for rule in cfg.get("rule_files") or []:
        inside = rule if os.path.isabs(rule) else os.path.join(os.path.dirname(cfg_path), rule)
        mounted = host_file(root, svc, inside)
        beside = os.path.join(os.path.dirname(host), rule)
        if not mounted or not os.path.isfile(mounted):
            problem("docker-compose.yml: prometheus: rule file %s is not mounted" % inside)
        elif os.path.realpath(mounted) != os.path.realpath(beside):
            problem("%s: rule file %s is %s in the container but %s beside the config"
                    % (name, rule, os.path.relpath(mounted, root), os.path.relpath(beside, root)))
    jobs = {j.get("job_name"): j for j in cfg.get("scrape_configs") or []}
    job = jobs.get("pgveil")
    if not job:
        problem("%s: no scrape job named pgveil (the alert rules use job=\"pgveil\")" % name)
        return
    if job.get("metrics_path", "/metrics") != "/metrics":
        problem("%s: job pgveil scrapes %s, pgveil serves /metrics" % (name, job.get("metrics_path")))
    targets = [t for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
    want = "pgveil:%s" % metrics_port
    if want not in targets:
        problem("%s: job pgveil targets %s, expected %s (compose service pgveil, metrics.listen port)"
                % (name, targets, want))


def check_grafana(root, svc):
    prov = host_file(root, svc, "/etc/grafana/provisioning")
    if not prov or not os.path.isdir(prov):
        problem("docker-compose.yml: grafana: /etc/grafana/provisioning is not mounted from the repository")
        return
    ds_ok = False
    for f in sorted(os.listdir(os.path.join(prov, "datasources"))):
        doc = read_yaml(os.path.join(prov, "datasources", f))
        for ds in doc.get("datasources") or []:
            if ds.get("type") == "prometheus":
                ds_ok = True
                if ds.get("uid") != "prometheus":
                    problem("grafana data source %s: uid %r, the dashboard expects prometheus"
                            % (ds.get("name"), ds.get("uid")))
                if ds.get("url") != "http://prometheus:9090":
                    problem("grafana data source %s: url %s, expected http://prometheus:9090"
                            % (ds.get("name"), ds.get("url")))
    if not ds_ok:
        problem("grafana provisioning: no Prometheus data source")
    dash_ok = False
    for f in sorted(os.listdir(os.path.join(prov, "dashboards"))):
        doc = read_yaml(os.path.join(prov, "dashboards", f))
        for p in doc.get("providers") or []:
            path = (p.get("options") or {}).get("path", "").rstrip("/")
            # The directory itself, or files mounted into it.
            files = []
            host = host_file(root, svc, path)
            if host and os.path.isdir(host):
                files = [os.path.join(host, x) for x in os.listdir(host)]
            for kind, src, dst in mounts(svc):
                if kind == "bind" and dst.startswith(path + "/"):
                    files.append(repo_path(root, src))
            if not files:
                problem("grafana dashboard provider %s: nothing is mounted at %s" % (p.get("name"), path))
            if any(x.endswith(os.path.join("deploy", "grafana", "pgveil-dashboard.json")) and os.path.isfile(x)
                   for x in files):
                dash_ok = True
    if not dash_ok:
        problem("grafana provisioning: no provider loads deploy/grafana/pgveil-dashboard.json")
    home = (svc.get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home and not (host_file(root, svc, home) and os.path.isfile(host_file(root, svc, home))):
        problem("docker-compose.yml: grafana home dashboard %s is not mounted" % home)


def main():
    ap = argparse.ArgumentParser(description="Check docker-compose.yml without Docker.")
    ap.add_argument("--root", default=ROOT, help="repository root (default: this checkout)")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    how = check(root)
    for p in PROBLEMS:
        print("check_compose: %s" % p, file=sys.stderr)
    if PROBLEMS:
        print("check_compose: %d problem(s)" % len(PROBLEMS), file=sys.stderr)
        return 1
    print("check_compose: docker-compose.yml (read with %s), pgveil config, prometheus and grafana "
          "provisioning ok" % how)
    return 0


if __name__ == "__main__":
    sys.exit(main())
