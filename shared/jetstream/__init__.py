"""The JetStream runtime every service may import: the connection, the
topology (streams, consumers, buckets), the one worker loop and its pull
fetch, the DLQ, and the KV followers."""
