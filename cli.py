"""`peakdesk`: start the system, inspect it, benchmark it.

    peakdesk up        start everything on this machine (or join services given by URL)
    peakdesk status    hosts, activations, outbox backlog, presence — from any shell
    peakdesk backup    Redis state and ClickHouse events, consistent, to a directory or S3
    peakdesk restore   a backup onto a stopped peakdesk
    peakdesk keys      encryption at rest: rotate, re-wrap or shred merchants' data keys
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click
import orjson

from actors.settings import ConfigError, Settings, default_data_dir

RUN_FILE = "run.json"  # written by `up` under the data dir: how other shells find the system


def _settings(**kwargs) -> Settings:
    try:
        return Settings(**{k: v for k, v in kwargs.items() if v is not None})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
def main() -> None:
    """peakdesk — customer-service messaging for promotion peaks."""


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where Redis, chDB and run files live [./peakdesk-data or $PEAKDESK_DATA_DIR].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Gateway listen address.")
@click.option("--port", type=int, default=8080, show_default=True, help="Gateway listen port.")
@click.option("--redis-url", default=None, help="Use this Redis instead of starting one.")
@click.option("--clickhouse-url", default=None, help="ClickHouse HTTP URL instead of embedded chDB.")
@click.option("--ray-address", default=None, help="Join this Ray cluster instead of starting one.")
@click.option("--hosts", type=int, default=None, help="Actor hosts [CPU count].")
@click.option("--writers", type=int, default=None, help="Outbox writers [1].")
@click.option("--attachments-url", default=None,
              help="s3://BUCKET[/PREFIX] to keep attachments in S3 [<data-dir>/attachments]; "
                   "credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.")
@click.option("--s3-endpoint-url", default=None, help="An S3-compatible store (MinIO, Ceph, OSS...) [AWS].")
@click.option("--s3-region", default=None, help="The bucket's region [$AWS_REGION, else the AWS config's].")
@click.option("--max-connections-per-ip", type=int, default=None,
              help="Websocket connections one client IP may hold [200]; raise it behind a NAT or for `peakdesk bench`.")
@click.option("--frames-per-s", type=int, default=None, help="Frames per second per websocket, bursts of twice that [20].")
@click.option("--widget-sessions-per-ip", "widget_sessions_per_ip_per_min", type=int, default=None,
              help="New widget visitor tokens, and new conversations, one client IP may start a minute [30]; "
                   "raise it behind a proxy or for `peakdesk bench`.")
@click.option("--bot-workers", type=int, default=None, help="Bot worker processes, one CPU each [1]; 0: no bot.")
@click.option("--llm-url", default=None,
              help="An OpenAI-compatible API (e.g. http://10.0.0.5:8000/v1) that may phrase the bot's answers; "
                   "key from $PEAKDESK_LLM_API_KEY [off].")
@click.option("--llm-model", default=None, help="The model name to ask at --llm-url.")
@click.option("--llm-timeout", type=float, default=None, help="Seconds before the plain answer is sent instead [2].")
@click.option("--tls-cert", default=None, help="PEM certificate (chain): the gateway serves https:// and wss:// only.")
@click.option("--tls-key", default=None, help="The certificate's PEM private key.")
def up(data_dir, host, port, redis_url, clickhouse_url, ray_address, hosts, writers,
       attachments_url, s3_endpoint_url, s3_region, max_connections_per_ip, frames_per_s,
       widget_sessions_per_ip_per_min, bot_workers, llm_url, llm_model, llm_timeout, tls_cert, tls_key) -> None:
    """Start peakdesk; Ctrl-C (or SIGTERM) stops everything it started."""
    settings = _settings(data_dir=data_dir, host=host, port=port, redis_url=redis_url,
                         clickhouse_url=clickhouse_url, ray_address=ray_address, hosts=hosts, writers=writers,
                         attachments_url=attachments_url, s3_endpoint_url=s3_endpoint_url,
                         max_connections_per_ip=max_connections_per_ip, frames_per_s=frames_per_s,
                         widget_sessions_per_ip_per_min=widget_sessions_per_ip_per_min,
                         bot_workers=bot_workers, llm_url=llm_url, llm_model=llm_model, llm_timeout_s=llm_timeout,
                         tls_cert_file=tls_cert, tls_key_file=tls_key,
                         llm_api_key=os.environ.get("PEAKDESK_LLM_API_KEY") if llm_url else None,
                         **(_s3_environment(s3_region) if attachments_url else {"s3_region": s3_region}))
    from actors.launcher import run_until_signalled

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sys.exit(run_until_signalled(settings, stop, RUN_FILE))


def _s3_environment(region: str | None) -> dict:
    """The one place that reads AWS credentials from the environment: they travel in Settings to
    the gateway on whatever Ray node it runs. Unset ones are left to boto3's chain there."""
    env = {k: os.environ.get(k) or None for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                  "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")}
    return {"s3_access_key_id": env["AWS_ACCESS_KEY_ID"], "s3_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "s3_session_token": env["AWS_SESSION_TOKEN"],
            "s3_region": region or env["AWS_REGION"] or env["AWS_DEFAULT_REGION"]}


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The data dir of a running `peakdesk up`.")
@click.option("--redis-url", default=None, help="Read the cluster's state from this Redis.")
@click.option("--prefix", default="pd:", show_default=True, help="Key prefix of the cluster.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(data_dir, redis_url, prefix, as_json) -> None:
    """Hosts, activations, mailboxes, outbox backlog and presence counts."""
    from actors.status import collect, render

    redis_url, prefix = _find_system(data_dir, redis_url, prefix)
    report = asyncio.run(collect(redis_url, prefix))
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else render(report))


def _find_system(data_dir: Path | None, redis_url: str | None, prefix: str) -> tuple[str, str]:
    """The Redis of a running `peakdesk up` (from its run file), or the one given."""
    from storage import crypto

    data_dir = data_dir or default_data_dir()
    if redis_url is not None:
        crypto.configure_lazily(data_dir / "master.key")
        return redis_url, prefix
    run_file = data_dir / RUN_FILE
    if not run_file.exists():
        raise click.UsageError(f"no running peakdesk found ({run_file} is missing); pass --redis-url")
    info = orjson.loads(run_file.read_bytes())
    crypto.configure_lazily(info.get("master_key_file") or data_dir / "master.key")
    return info["redis_url"], info["prefix"]


def _system_options(fn):
    fn = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                      help="The data dir of a running `peakdesk up`.")(fn)
    fn = click.option("--redis-url", default=None, help="The cluster's Redis (instead of --data-dir).")(fn)
    fn = click.option("--prefix", default="pd:", show_default=True, help="Key prefix of the cluster.")(fn)
    return fn


def _admin(data_dir, redis_url, prefix, fn):
    from actors.admin_cli import AdminError, run
    from storage.records import Conflict, NotFound

    url, prefix = _find_system(data_dir, redis_url, prefix)
    try:
        return run(url, prefix, fn)
    except (AdminError, NotFound, Conflict, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _echo_json(value) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@main.group()
def merchant() -> None:
    """Merchants (tenants)."""


@merchant.command("create")
@click.argument("merchant_id", required=False)
@click.option("--id", "merchant_id_opt", default=None, help="The merchant id (or give it as the argument).")
@click.option("--name", required=True, help="Display name.")
@_system_options
def merchant_create(merchant_id, merchant_id_opt, name, data_dir, redis_url, prefix) -> None:
    """Create a merchant; prints its customer-signing secret once."""
    merchant_id = merchant_id or merchant_id_opt
    if not merchant_id:
        raise click.UsageError("give the merchant id: peakdesk merchant create SHOP_ID --name NAME")
    from actors.admin_cli import operator, validated
    from gateway.schemas import Id, Name, Strict

    class Body(Strict):
        merchant_id: Id
        name: Name

    body = validated(Body, merchant_id=merchant_id, name=name)
    record, secret = _admin(data_dir, redis_url, prefix,
                            lambda rs: rs.create_merchant(body.merchant_id, body.name, None, actor=operator()))
    _echo_json(record)
    click.echo(f"customer signing secret (shown once; give it to the merchant's web team): {secret}")


@merchant.command("list")
@click.option("--json", "as_json", is_flag=True)
@_system_options
def merchant_list(as_json, data_dir, redis_url, prefix) -> None:
    """List merchants."""
    items = _admin(data_dir, redis_url, prefix, lambda rs: rs.list_merchants())
    if as_json:
        return _echo_json(items)
    for m in items:
        click.echo(f"{m['merchant_id']:<24}{m['name']}")


@main.command()
@click.option("--retry-dead", is_flag=True, help="Run the jobs given up on again (after fixing their receiver).")
@_system_options
def jobs(retry_dead, data_dir, redis_url, prefix) -> None:
    """Side effects (webhook deliveries, ticket notices): queued, retrying, given up."""
    from storage import jobs as job_queue

    async def run(rs):
        revived = await job_queue.revive_dead(rs.r, rs.p) if retry_dead else None
        return revived, await job_queue.pending(rs.r, rs.p)
    revived, counts = _admin(data_dir, redis_url, prefix, run)
    if revived is not None:
        click.echo(f"queued again: {revived}")
    _echo_json(counts)


@main.group()
def agent() -> None:
    """Agents of a merchant."""


@agent.command("add")
@click.option("--merchant", "merchant_id", required=True)
@click.option("--username", required=True)
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["owner", "admin", "supervisor", "agent"]), default="agent", show_default=True)
@click.option("--group", "groups", multiple=True, help="Skill group (repeatable).")
@click.option("--skill", "skills", multiple=True, help="Skill (repeatable).")
@click.option("--max-concurrent", type=int, default=5, show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else one is generated).")
@_system_options
def agent_add(merchant_id, username, name, role, groups, skills, max_concurrent, password_stdin,
              data_dir, redis_url, prefix) -> None:
    """Add an agent; prints a generated password once unless --password-stdin."""
    from actors.admin_cli import new_password, operator, validated
    from gateway.auth import hash_password, password_problem
    from gateway.schemas import AgentCreate

    password = click.get_text_stream("stdin").readline().rstrip("\n") if password_stdin else new_password()
    body = validated(AgentCreate, username=username, name=name, password=password, role=role, groups=list(groups),
                     skills=list(skills), max_concurrent=max_concurrent)
    if problem := password_problem(password):
        raise click.ClickException(f"password: {problem}")
    fields = body.model_dump(exclude={"password"})
    record = _admin(data_dir, redis_url, prefix, lambda rs: rs.create_agent(
        merchant_id, password_hash=hash_password(password), actor=operator(), **fields))
    _echo_json(record)
    if not password_stdin:
        click.echo(f"password (shown once): {password}")


@agent.command("list")
@click.option("--merchant", "merchant_id", required=True)
@click.option("--json", "as_json", is_flag=True)
@_system_options
def agent_list(merchant_id, as_json, data_dir, redis_url, prefix) -> None:
    """List a merchant's agents."""
    items = _admin(data_dir, redis_url, prefix, lambda rs: rs.list_agents(merchant_id))
    if as_json:
        return _echo_json(items)
    for a in items:
        state = "enabled" if a.get("enabled", True) else "disabled"
        click.echo(f"{a['agent_id']:<14}{a['username']:<20}{a['role']:<12}{state:<10}{a['name']}")


@agent.command("disable")
@click.option("--merchant", "merchant_id", required=True)
@click.argument("agent_id", required=False)
@click.option("--agent", "agent_opt", default=None, help="Agent id or username (or give the id as the argument).")
@_system_options
def agent_disable(merchant_id, agent_id, agent_opt, data_dir, redis_url, prefix) -> None:
    """Disable an agent: it can no longer log in, and its tokens stop working."""
    from actors.admin_cli import operator

    agent_id = agent_id or agent_opt
    if not agent_id:
        raise click.UsageError("give the agent: peakdesk agent disable --merchant SHOP_ID AGENT_ID")

    async def by_id_or_username(rs):
        found = await rs.find_login(merchant_id, agent_id)
        return await rs.disable_agent(merchant_id, found[0]["agent_id"] if found else agent_id, actor=operator())

    _echo_json(_admin(data_dir, redis_url, prefix, by_id_or_username))


@main.group()
def apikey() -> None:
    """API keys for a merchant's back-end systems."""


@apikey.command("create")
@click.option("--merchant", "merchant_id", required=True)
@click.option("--name", required=True, help="What uses the key, e.g. 'OMS sync'.")
@_system_options
def apikey_create(merchant_id, name, data_dir, redis_url, prefix) -> None:
    """Create an API key; prints it once (only its hash is kept)."""
    from actors.admin_cli import operator, validated
    from gateway.schemas import ApiKeyCreate

    body = validated(ApiKeyCreate, name=name)
    record, plaintext = _admin(data_dir, redis_url, prefix,
                               lambda rs: rs.create_api_key(merchant_id, name=body.name, actor=operator()))
    _echo_json(record)
    click.echo(f"api key (shown once): {plaintext}")


@main.command()
@click.option("--url", default="ws://127.0.0.1:8080/ws", show_default=True, help="The peakdesk websocket to drive.")
@click.option("--profile", type=click.Choice(["steady", "surge", "soak"]), default="steady", show_default=True)
@click.option("--customers", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Live conversations at the base arrival rate.")
@click.option("--agents", type=click.IntRange(1, 5_000), default=10, show_default=True)
@click.option("--agent-capacity", type=click.IntRange(1, 100), default=None,
              help="Conversations per agent [enough for all: customers x 1.5 / agents, at most 100].")
@click.option("--duration", type=click.FloatRange(1, 86_400), default=60.0, show_default=True,
              help="Seconds of arrivals; conversations then get --grace seconds to finish.")
@click.option("--grace", type=click.FloatRange(0, 3_600), default=60.0, show_default=True)
@click.option("--messages", type=click.IntRange(1, 1_000), default=6, show_default=True,
              help="Customer messages per conversation (each answered).")
@click.option("--customer-think", type=click.FloatRange(0, 600), default=3.0, show_default=True, help="Seconds (mean).")
@click.option("--agent-think", type=click.FloatRange(0, 600), default=2.0, show_default=True, help="Seconds (mean).")
@click.option("--message-bytes", type=click.IntRange(1, 4_000), default=60, show_default=True)
@click.option("--surge-factor", type=click.FloatRange(1, 100), default=5.0, show_default=True,
              help="Peak arrival rate / base rate, with --profile surge.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--baseline", type=click.Choice(["echo"]), default=None,
              help="Also measure saturation against a bare Quart echo started here; report the ratio.")
@click.option("--saturation-connections", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--saturation-seconds", type=click.FloatRange(1, 600), default=10.0, show_default=True)
@click.option("--smoke", is_flag=True, help="A 10-second small run that checks a whole conversation end to end.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where `peakdesk up` wrote demo-login.txt (used unless --username is given).")
@click.option("--merchant", default="demo", show_default=True)
@click.option("--username", default=None, help="An owner or admin of the merchant.")
@click.option("--password", envvar="PEAKDESK_BENCH_PASSWORD", default=None, help="[$PEAKDESK_BENCH_PASSWORD]")
@click.option("--seed", type=int, default=1, show_default=True)
def bench(url, profile, customers, agents, agent_capacity, duration, grace, messages, customer_think, agent_think,
          message_bytes, surge_factor, json_path, plot_path, baseline, saturation_connections, saturation_seconds,
          smoke, data_dir, merchant, username, password, seed) -> None:
    """Replay a promotion surge against a running peakdesk and prove nothing was lost.

    Exit status 1 if any message was lost or shown twice, or ClickHouse's events differ from the
    run's. Raise the server's limits for big runs: `peakdesk up --max-connections-per-ip 20000
    --frames-per-s 1000 --widget-sessions-per-ip 1000000`."""
    import math

    from bench import command
    from bench.profiles import Plan
    from bench.rest import Login, SetupError
    from bench.surge import Options

    if not url.startswith(("ws://", "wss://")):
        raise click.BadParameter(f"must start with ws:// or wss://, got {url!r}", param_hint="--url")
    if username:
        if not password:
            raise click.BadParameter("give --password (or $PEAKDESK_BENCH_PASSWORD) with --username",
                                     param_hint="--password")
        login = Login(merchant, username, password)
    else:
        try:
            login = Login.from_data_dir(data_dir or default_data_dir())
        except SetupError as exc:
            raise click.UsageError(str(exc)) from None
    capacity = agent_capacity or min(100, max(1, math.ceil(customers * 1.5 / agents)))
    plan = Plan(customers=customers, agents=agents, agent_capacity=capacity, messages=messages,
                customer_think_s=customer_think, agent_think_s=agent_think, message_bytes=message_bytes,
                surge_factor=surge_factor)
    o = Options(url=url, profile=profile, duration=duration, grace=grace, plan=plan, login=login, seed=seed,
                saturation_s=saturation_seconds, saturation_connections=saturation_connections)
    if smoke:
        o = command.smoke(o)
    try:
        sys.exit(command.run(o, baseline, json_path, plot_path))
    except SetupError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


@main.group()
def bot() -> None:
    """Tune the bot on your own questions before turning it on."""


@bot.command("eval")
@click.option("--kb", "kb_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Knowledge base: a JSON list of {id, question, answer, alternatives} (or .csv).")
@click.option("--queries", "queries_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help='JSON lines {"query": ..., "expected": "<entry id>" or null}.')
@click.option("--mistakes", is_flag=True, help="Also list every query the bot got wrong.")
def bot_eval(kb_path, queries_path, mistakes) -> None:
    """Top-1 accuracy, handover precision and recall, latency: one JSON object."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from actors.bot.evaluate import EvalInputError, evaluate, load_kb, load_queries

    try:
        index = load_kb(kb_path)
        rows = load_queries(queries_path, {e.id for e in index.entries})
    except EvalInputError as exc:
        raise click.UsageError(str(exc)) from None
    result = evaluate(index, rows)
    if not mistakes:
        result.pop("mistakes")
    click.echo(orjson.dumps(result).decode())


@bot.command("sentiment")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help='JSON lines {"text": ..., "label": "angry"|"neutral"|"happy"}.')
@click.option("--mistakes", is_flag=True, help="Also list every message classified wrongly.")
def bot_sentiment(input_path, mistakes) -> None:
    """Accuracy of the bot's mood detection (angry customers are handed over at once)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from actors.bot.evaluate import EvalInputError, evaluate_sentiment

    try:
        result = evaluate_sentiment(input_path)
    except EvalInputError as exc:
        raise click.UsageError(str(exc)) from None
    if not mistakes:
        result.pop("mistakes")
    click.echo(orjson.dumps(result).decode())


@main.command()
@click.argument("name", required=False)
@click.option("--from", "start", default=None, help="ISO date or date-time, in --tz [7 days ago].")
@click.option("--to", "end", default=None, help="ISO date or date-time, exclusive [now].")
@click.option("--tz", default=None, help="IANA time zone of the buckets and dates [UTC], e.g. Asia/Shanghai.")
@click.option("--by", type=click.Choice(["hour", "day", "week"]), default=None, help="Time buckets [day].")
@click.option("--set", "options", multiple=True, metavar="KEY=VALUE",
              help="A report's own option, e.g. --set growth=3 for staffing (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--url", default=None, help="The gateway [from the data dir's run.json, else http://127.0.0.1:8080].")
@click.option("--api-key", envvar="PEAKDESK_API_KEY", default=None, help="An API key of the merchant [$PEAKDESK_API_KEY].")
@click.option("--merchant", default=None, help="With --username: log in as a supervisor or up of this merchant.")
@click.option("--username", default=None)
@click.option("--password", envvar="PEAKDESK_PASSWORD", default=None, help="[$PEAKDESK_PASSWORD]")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where `peakdesk up` wrote run.json and demo-login.txt (the default login).")
def report(name, start, end, tz, by, options, fmt, url, api_key, merchant, username, password, data_dir) -> None:
    """Print a report (no NAME: list them): volume, response_times, agents, bot, staffing...

    \b
    peakdesk report volume --from 2026-11-11 --to 2026-11-12 --tz Asia/Shanghai --by hour
    peakdesk report staffing --from 2026-10-01 --set growth=4 --set answer_within_s=20
    """
    import csv
    import io

    from gateway import report_client as rc

    data_dir = data_dir or default_data_dir()
    base = (url or _gateway_url(data_dir)).rstrip("/")
    extra = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"must be KEY=VALUE, got {option!r}", param_hint="--set")
        extra[key] = value
    try:
        if api_key:
            token, is_key = api_key, True
        else:
            if username:
                if not (merchant and password):
                    raise click.UsageError("give --merchant and --password (or $PEAKDESK_PASSWORD) with --username")
                creds = (merchant, username, password)
            else:
                from bench.rest import Login, SetupError

                try:
                    demo = Login.from_data_dir(data_dir)
                except SetupError as exc:
                    raise click.UsageError(f"{exc}; or give --api-key") from None
                creds = (demo.merchant, demo.username, demo.password)
            token, is_key = rc.login(base, *creds), False
        if not name:
            click.echo(rc.table(["report", "what"], [[r["name"], r["description"]] for r in rc.names(base, token, is_key)]))
            return
        out = rc.fetch(base, token, name, {"from": start, "to": end, "tz": tz, "by": by, **extra}, is_key)
    except rc.ReportClientError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    if fmt == "json":
        click.echo(orjson.dumps(out).decode())
    elif fmt == "csv":
        text = io.StringIO()
        csv.writer(text).writerows([out["columns"], *out["rows"]])
        click.echo(text.getvalue(), nl=False)
    else:
        click.echo(f"{name} · {out['merchant']} · {out['from']} → {out['to']} ({out['tz']}, by {out['by']})")
        click.echo(rc.table(out["columns"], out["rows"]) if out["rows"] else "(no data in this range)")


def _gateway_url(data_dir: Path) -> str:
    try:
        return orjson.loads((data_dir / RUN_FILE).read_bytes())["gateway_url"]
    except (OSError, ValueError, KeyError):
        return "http://127.0.0.1:8080"


def _cluster_options(fn):
    fn = click.option("--ray-address", default=None, help="The cluster's Ray (HOST:PORT) [from the run file].")(fn)
    return _system_options(fn)


def _operate(data_dir, redis_url, prefix, ray_address, fn):
    """Attach to the running cluster, run `fn(cluster)`, print what changed as JSON."""
    from actors import scaling
    from actors.operate_cli import OperateError, settings_for

    try:
        settings = settings_for((data_dir or default_data_dir()) / RUN_FILE, redis_url, prefix, ray_address)
        cluster = scaling.attach(settings)
        try:
            result = fn(scaling, cluster)
        finally:
            import ray

            ray.shutdown()
    except (OperateError, LookupError, ValueError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    _echo_json(result)


@main.command()
@click.option("--hosts", type=click.IntRange(1, 1024), default=None, help="Actor hosts the cluster should have.")
@click.option("--gateways", type=click.IntRange(1, 64), default=None, help="Gateways the cluster should have.")
@click.option("--bot-workers", type=click.IntRange(0, 256), default=None, help="Bot workers (one CPU each).")
@_cluster_options
def scale(hosts, gateways, bot_workers, data_dir, redis_url, prefix, ray_address) -> None:
    """Change the number of hosts, gateways or bot workers live. New hosts go round robin over
    the Ray nodes and take new conversations at once; removed hosts hand their conversations over
    first (nothing is dropped)."""
    if hosts is None and gateways is None and bot_workers is None:
        raise click.UsageError("give --hosts, --gateways and/or --bot-workers")
    _operate(data_dir, redis_url, prefix, ray_address,
             lambda sc, c: sc.scale(c, hosts=hosts, gateways=gateways, bot_workers=bot_workers, detached=True))


@main.command()
@click.argument("target")
@_cluster_options
def drain(target, data_dir, redis_url, prefix, ray_address) -> None:
    """Move activations off TARGET before it leaves: a host id (host-3) or a Ray node id (all
    peakdesk hosts on that node); the drained hosts are then stopped."""
    def run(sc, c):
        if target in c.hosts:
            return {"hosts_removed": [target], "activations_moved": sc.remove_hosts(c, [target])}
        return sc.drain_node(c, target)
    _operate(data_dir, redis_url, prefix, ray_address, run)


@main.command()
@_cluster_options
def rebalance(data_dir, redis_url, prefix, ray_address) -> None:
    """Even activations out: each host hands over those the placement table puts elsewhere
    (after a scale out, the older conversations)."""
    _operate(data_dir, redis_url, prefix, ray_address, lambda sc, c: {"activations_moved": sc.rebalance(c)})


@main.command()
@click.option("--rolling", is_flag=True, required=True, help="One at a time, each ready before the next (required).")
@click.option("--gateways-only", is_flag=True, help="Restart the gateways, not the hosts.")
@_cluster_options
def restart(rolling, gateways_only, data_dir, redis_url, prefix, ray_address) -> None:
    """Rolling restart of the gateways (clients reconnect and resume), the actor hosts (their
    state is in Redis), the writers and the bot workers; nothing acknowledged is lost."""
    _operate(data_dir, redis_url, prefix, ray_address,
             lambda sc, c: sc.restart_rolling(c, gateways=True, hosts=not gateways_only, others=not gateways_only))


@main.command()
@click.option("--head", is_flag=True, help="Start a Ray head node here and peakdesk on it (then like `up`).")
@click.option("--address", default=None, help="Join the Ray cluster at HEAD:PORT with hosts of this machine.")
@click.option("--ray-port", type=int, default=6379, show_default=True, help="With --head: Ray's GCS port.")
@click.option("--hosts", type=int, default=None, help="Hosts on this node [CPU count].")
@click.option("--gateway/--no-gateway", default=True, help="With --address: a gateway on this node too.")
@click.option("--namespace", default="peakdesk", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--redis-url", default=None, help="With --head: the cluster's Redis (every node must reach it).")
@click.option("--clickhouse-url", default=None, help="With --head: the cluster's ClickHouse.")
@click.option("--host", default="0.0.0.0", show_default=True, help="With --head: the gateway's listen address.")
@click.option("--port", type=int, default=8080, show_default=True, help="Gateway port.")
def start(head, address, ray_port, hosts, gateway, namespace, data_dir, redis_url, clickhouse_url, host, port) -> None:
    """Start (--head) or join (--address HEAD:PORT) a multi-machine cluster: wraps `ray start`.

    \b
    machine 1:  peakdesk start --head --redis-url redis://10.0.0.5:6379 --clickhouse-url http://10.0.0.6:8123
    machine 2:  peakdesk start --address 10.0.0.1:6379
    """
    from actors.operate_cli import OperateError, join, ray_start

    if head == bool(address):
        raise click.UsageError("give exactly one of --head and --address HEAD:PORT")
    try:
        if address:
            _echo_json(join(address, namespace, hosts, gateway))
            return
        ray_start(["--head", f"--port={ray_port}", "--include-dashboard=false"])
    except OperateError as exc:
        raise click.ClickException(str(exc)) from None
    import socket

    settings = _settings(data_dir=data_dir, host=host, port=port, redis_url=redis_url, clickhouse_url=clickhouse_url,
                         ray_address=f"{socket.gethostbyname(socket.gethostname())}:{ray_port}", hosts=hosts,
                         namespace=namespace)
    from actors.launcher import run_until_signalled

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # Ctrl-C stops peakdesk's actors; the Ray node `ray start` began stays until `ray stop`
    # (which stops every Ray process of this machine, so peakdesk never runs it for you).
    sys.exit(run_until_signalled(settings, stop, RUN_FILE))


class _Refused(click.ClickException):
    """Bad input, refused before anything changed: exit status 2."""

    exit_code = 2


def _backup_call(fn):
    from storage.backup import BackupError, BackupInputError

    try:
        _echo_json(fn())
    except BackupInputError as exc:
        raise _Refused(str(exc)) from None
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None


def _s3_options(fn):
    fn = click.option("--s3-region", default=None, help="The bucket's region [$AWS_REGION, else the AWS config's].")(fn)
    fn = click.option("--s3-endpoint-url", default=None,
                      help="An S3-compatible store (MinIO, Ceph, OSS...) [AWS]; credentials from AWS_ACCESS_KEY_ID /"
                           " AWS_SECRET_ACCESS_KEY.")(fn)
    return fn


@main.command()
@click.option("--to", "to", required=True, metavar="DIR|s3://BUCKET/PREFIX",
              help="A new (or empty) directory, or an S3 prefix holding no objects yet.")
@_s3_options
@click.option("--pause-timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Seconds to wait for every writer to finish its batch in hand and pause.")
@click.option("--max-redis-pause", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="Seconds Redis writes may be held while its keys are dumped; a longer dump fails.")
@_cluster_options
def backup(to, s3_endpoint_url, s3_region, pause_timeout, max_redis_pause, data_dir, redis_url, prefix,
           ray_address) -> None:
    """Back up a running peakdesk: its Redis keys and its ClickHouse events, consistent with each
    other (see docs/operations.md, "Backup and restore"). Exit status 2: refused, nothing done."""
    from actors.backup_cli import run_backup

    _backup_call(lambda: run_backup(to, run_file=(data_dir or default_data_dir()) / RUN_FILE, redis_url=redis_url,
                                    prefix=prefix, ray_address=ray_address, s3_endpoint_url=s3_endpoint_url,
                                    s3_region=s3_region, pause_timeout_s=pause_timeout,
                                    max_redis_pause_s=max_redis_pause))


@main.command()
@click.option("--from", "source", required=True, metavar="DIR|s3://BUCKET/PREFIX", help="A backup made by `peakdesk backup`.")
@click.option("--wipe", is_flag=True, help="Delete the keys under the prefix and the events already there first.")
@_s3_options
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The stopped peakdesk's data dir: its Redis and chDB, unless given by URL [./peakdesk-data].")
@click.option("--redis-url", default=None, help="Restore into this Redis [the data dir's, started for the restore].")
@click.option("--clickhouse-url", default=None, help="Restore into this ClickHouse [the data dir's chDB].")
def restore(source, wipe, s3_endpoint_url, s3_region, data_dir, redis_url, clickhouse_url) -> None:
    """Restore a backup onto a STOPPED peakdesk (prefix and database from the backup), then start
    it: its writers drain the restored outbox. Refuses a non-empty target unless --wipe. Exit
    status 2: refused, nothing changed."""
    from actors.backup_cli import run_restore

    _backup_call(lambda: run_restore(source, data_dir=data_dir or default_data_dir(), run_file_name=RUN_FILE,
                                     redis_url=redis_url, clickhouse_url=clickhouse_url, wipe=wipe,
                                     s3_endpoint_url=s3_endpoint_url, s3_region=s3_region))


@main.group()
def keys() -> None:
    """Encryption at rest: the merchants' data keys (docs/operations.md, "Encryption at rest")."""


def _keyring(data_dir, redis_url, prefix):
    import redis

    from storage import crypto

    url, prefix = _find_system(data_dir, redis_url, prefix)
    try:
        return crypto.Keyring(redis.Redis.from_url(url), prefix)
    except crypto.CryptoError as exc:
        raise click.ClickException(str(exc)) from None


def _known_merchant(ring, merchant: str) -> None:
    if not (ring.r.exists(f"{ring.p}merchant:{merchant}") or ring.r.exists(ring.hash_key(merchant))):
        raise _Refused(f"--merchant: no merchant {merchant!r}")


@keys.command("status")
@click.option("--merchant", default=None, help="One merchant [all that have keys].")
@_system_options
def keys_status(merchant, data_dir, redis_url, prefix) -> None:
    """Each merchant's data key versions, the current one, and whether all are wrapped by the current master key."""
    ring = _keyring(data_dir, redis_url, prefix)
    _echo_json({"items": [ring.status(m) for m in ([merchant] if merchant else ring.merchants())]})


@keys.command("rotate")
@click.option("--merchant", default=None, help="The merchant whose data key gets a new version.")
@click.option("--all", "every", is_flag=True, help="Every merchant that has keys.")
@_system_options
def keys_rotate(merchant, every, data_dir, redis_url, prefix) -> None:
    """New data is sealed with a new key version (every process within 10 s); older versions keep opening old data."""
    from storage import crypto

    if bool(merchant) == every:
        raise _Refused("give exactly one of --merchant M and --all")
    ring = _keyring(data_dir, redis_url, prefix)
    if merchant:
        _known_merchant(ring, merchant)
    try:
        done = {m: ring.rotate(m) for m in ([merchant] if merchant else ring.merchants())
                if m == merchant or "shredded_at" not in ring.status(m)}
    except crypto.Shredded as exc:
        raise _Refused(str(exc)) from None
    _echo_json({"rotated": [{"merchant": m, "current": v} for m, v in done.items()]})


@keys.command("rewrap")
@_system_options
def keys_rewrap(data_dir, redis_url, prefix) -> None:
    """Wrap every merchant's keys under the current (first) master key; older master keys may then be dropped."""
    from storage import crypto

    ring = _keyring(data_dir, redis_url, prefix)
    try:
        changed = {m: ring.rewrap(m) for m in ring.merchants()}
    except crypto.CryptoError as exc:
        raise click.ClickException(str(exc)) from None
    _echo_json({"rewrapped": sum(changed.values()), "merchants": len(changed)})


@keys.command("shred")
@click.option("--merchant", required=True, help="The merchant whose personal data becomes unreadable for good.")
@click.option("--yes", is_flag=True, help="Confirm: this cannot be undone.")
@_system_options
def keys_shred(merchant, yes, data_dir, redis_url, prefix) -> None:
    """Delete every data key of a merchant (right to erasure): its messages and contact data in Redis and
    ClickHouse can never be read again. Counts and timings in reports remain. Backups made before hold the
    keys: see docs/operations.md."""
    ring = _keyring(data_dir, redis_url, prefix)
    _known_merchant(ring, merchant)
    if not yes:
        raise _Refused(f"shredding {merchant}'s keys cannot be undone: add --yes")
    ring.shred(merchant)
    _echo_json({"shredded": merchant})

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
