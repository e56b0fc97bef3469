"""10,000 short texts through one EmbedStream: answers in order, memory flat."""

from __future__ import annotations

from pathlib import Path

from bertserve.client import Client

TEXTS = 10_000
PER_REQUEST = 4
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def text(i: int) -> str:
    # i % 7 + 1 words: the token count of each answer tells its place in the input
    return " ".join(WORDS[: i % 7 + 1]) + f" {i % 10}"


def test_ten_thousand_texts_stream_in_order_with_flat_memory(live_server):
    read = 0

    def batches():
        nonlocal read
        for start in range(0, TEXTS, PER_REQUEST):
            read = start + PER_REQUEST
            yield [text(i) for i in range(start, start + PER_REQUEST)]

    with Client(live_server.target, timeout=120) as client:
        reference = client.embed([text(i) for i in range(14)], output="tokens")
        seen = 0
        baseline = peak = 0
        for result in client.embed_stream(batches(), window=8, output="tokens"):
            expected = [text(seen + k) for k in range(PER_REQUEST)]
            assert result.lengths.tolist() == [
                int(reference.lengths[(seen + k) % 14]) for k in range(PER_REQUEST)
            ], expected
            # the source is read lazily: never more than the window ahead
            assert read - seen <= (8 + 1) * PER_REQUEST
            if seen < 14:
                assert (
                    abs(result.token_embeddings[0] - reference.token_embeddings[seen]).max() < 3e-5
                )
            seen += len(result)
            if seen == 1000:
                baseline = rss_bytes()
            elif seen > 1000:
                peak = max(peak, rss_bytes())
    assert seen == TEXTS
    # Holding every answer would take ~10,000 x 6 tokens x hidden x 4 bytes (> 90 MB for
    # MiniLM); a bounded window keeps growth to allocator noise.
    assert peak - baseline < 24 * 1024 * 1024, f"RSS grew {(peak - baseline) / 2**20:.1f} MiB"
