-- Columns the reports read, computed once at insert from the JSON payload (MATERIALIZED):
-- a report then reads a few narrow columns instead of parsing every payload it scans. Rows
-- stored before this migration compute them on read, with the same expressions.
--
-- sender:      who wrote a message.sent / note.added: customer, visitor, agent, bot
-- wait_ms:     session.assigned (queued -> assigned) and session.closed from the queue (abandoned)
-- response_ms: an agent's message answering customer messages: since the first unanswered one
-- first_response: that answer is the conversation's first by an agent (first response time)
-- handle_ms:   session.closed: assigned -> closed
-- score:       csat.rated
-- reason:      bot.handoff; session.closed: who closed it (agent, customer, idle, system)
-- from_status: session.closed: the status it closed from (bot, queued, assigned, offline)
-- issue_type:  session.created
-- is_bot:      session.created of a conversation that started with the bot
ALTER TABLE {database}.events
    ADD COLUMN IF NOT EXISTS sender LowCardinality(String) MATERIALIZED JSONExtractString(payload, 'from', 'kind'),
    ADD COLUMN IF NOT EXISTS wait_ms UInt32 MATERIALIZED JSONExtractUInt(payload, 'wait_ms'),
    ADD COLUMN IF NOT EXISTS response_ms UInt32 MATERIALIZED JSONExtractUInt(payload, 'response_ms'),
    ADD COLUMN IF NOT EXISTS first_response UInt8 MATERIALIZED JSONExtractBool(payload, 'first_response'),
    ADD COLUMN IF NOT EXISTS handle_ms UInt32 MATERIALIZED toUInt32(JSONExtractFloat(payload, 'handle_s') * 1000),
    ADD COLUMN IF NOT EXISTS score UInt8 MATERIALIZED JSONExtractUInt(payload, 'score'),
    ADD COLUMN IF NOT EXISTS reason LowCardinality(String) MATERIALIZED
        if(type = 'session.closed', JSONExtractString(payload, 'by'), JSONExtractString(payload, 'reason')),
    ADD COLUMN IF NOT EXISTS from_status LowCardinality(String) MATERIALIZED JSONExtractString(payload, 'from_status'),
    ADD COLUMN IF NOT EXISTS issue_type LowCardinality(String) MATERIALIZED JSONExtractString(payload, 'issue_type'),
    ADD COLUMN IF NOT EXISTS is_bot UInt8 MATERIALIZED JSONExtractBool(payload, 'bot');
