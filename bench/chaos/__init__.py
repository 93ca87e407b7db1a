"""The chaos suite (`python -m bench.chaos [--short] [--json OUT]`): a surge of conversations
over real websockets while, in turn, a gateway, an actor host, a writer, Redis, the chDB owner
and a whole Ray worker node are killed; for each, what was acknowledged, lost, shown twice, how
long until traffic and health were back, and whether the outbox drained into ClickHouse with
exactly the run's events. See bench/chaos/__main__.py."""
