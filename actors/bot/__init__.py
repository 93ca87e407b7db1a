"""The bot: knowledge-base retrieval, intents and sentiment (pure logic, actors/bot/engine.py),
run by a pool of Ray actors of its own (actors/bot/worker.py) so it never stalls a host."""
