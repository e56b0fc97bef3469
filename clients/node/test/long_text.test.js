'use strict';
// Long documents from Node: the request fields of every long-text option (no server), and a
// long real text chunked and late-chunked by a live server (BERTSERVE_TARGET). The vectors it
// writes to BERTSERVE_NODE_LONG_OUT are compared with the Python client's by
// tests/e2e/test_long_text_clients.py, which names the text in BERTSERVE_LONG_TEXT_FILE.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { BertClient, embedRequest } = require('..');

test('long-text options become their EmbedRequest fields', () => {
  const request = embedRequest(['a text', 'another'], {
    longText: 'chunk',
    chunkTokens: 128,
    chunkOverlap: 0,
    chunkPooling: 'max',
    returnChunks: true,
    spans: [[0, 4], [1, 0, 3], { text: 1, start: 3, end: 7 }],
  });
  assert.equal(request.long_text, 'LONG_TEXT_CHUNK');
  assert.equal(request.chunk_tokens, 128);
  assert.equal(request.chunk_overlap, 0); // given: sent even as 0
  assert.equal(request.chunk_pooling, 'CHUNK_POOLING_MAX');
  assert.equal(request.return_chunks, true);
  assert.deepEqual(request.spans, [
    { text: 0, start: 0, end: 4 },
    { text: 1, start: 0, end: 3 },
    { text: 1, start: 3, end: 7 },
  ]);
  assert.equal(request.split, 'SPLIT_NONE');
  assert.ok(!('chunk_overlap' in embedRequest(['x'], { longText: 'chunk' })));
  assert.equal(embedRequest(['x'], { split: 'sentences' }).split, 'SPLIT_SENTENCES');
  assert.equal(embedRequest(['x']).long_text, 'LONG_TEXT_UNSPECIFIED');
});

test('bad long-text options say what is allowed', () => {
  const bad = [
    [{ longText: 'split' }, /unknown longText split; use one of: truncate, error, chunk/],
    [{ longText: 'chunk', chunkPooling: 'sum' }, /unknown chunkPooling sum; use one of: mean, max, first/],
    [{ longText: 'chunk', chunkTokens: 8, chunkOverlap: 8 }, /chunkOverlap=8 with chunkTokens=8: use 0..7/],
    [{ chunkTokens: 8 }, /chunkTokens shape the windows of longText: 'chunk'/],
    [{ spans: [[3, 3]] }, /start must be before end/],
    [{ spans: [[1, 0, 2]] }, /names text 1 of a call with 1 texts/],
    [{ spans: [[0, 2]], split: 'sentences' }, /give spans or split, not both/],
  ];
  for (const [options, message] of bad) assert.throws(() => embedRequest(['x'], options), message);
});

const target = process.env.BERTSERVE_TARGET;
const TEXT_FILE = process.env.BERTSERVE_LONG_TEXT_FILE || path.resolve(__dirname, '..', '..', '..', 'docs', 'clients.md');

// The window the Python side asks for too (tests/e2e/test_long_text_clients.py's CHUNK).
const CHUNK = { longText: 'chunk', chunkTokens: 128, chunkOverlap: 16 };

const b64 = (output) => Buffer.from(output.data.buffer, output.data.byteOffset, output.data.byteLength).toString('base64');

test('a long real text, chunked and late-chunked by a live server', { skip: !target && 'BERTSERVE_TARGET is not set' }, async () => {
  const text = fs.readFileSync(TEXT_FILE, 'utf8');
  const codePoints = [...text].length;
  const client = new BertClient(target);
  try {
    const cut = await client.embed([text], { longText: 'truncate', pooling: 'mean' });
    const chunked = await client.embed([text], { ...CHUNK, pooling: 'mean', returnChunks: true });
    assert.ok(chunked.lengths[0] > cut.lengths[0], 'the chunked text keeps every token');
    assert.equal(chunked.truncated[0], 0);
    assert.ok(chunked.chunkEmbeddings.length > 2);
    assert.equal(chunked.chunkSpans.length, chunked.chunkEmbeddings.length);
    chunked.chunkEmbeddings.forEach((v) => assert.equal(v.length, chunked.hidden));
    chunked.chunkSpans.forEach(([t, start, end], i) => {
      assert.equal(t, 0);
      assert.ok(start < end && end <= codePoints);
      if (i) assert.ok(start > chunked.chunkSpans[i - 1][1] && start < chunked.chunkSpans[i - 1][2], "windows overlap, in order");
    });
    assert.notDeepEqual(chunked.sentenceEmbedding[0], cut.sentenceEmbedding[0]);

    const half = Math.floor(codePoints / 2);
    const spans = [[0, 200], [half, half + 300]];
    const late = await client.embed([text], { ...CHUNK, pooling: 'none', spans });
    assert.deepEqual(late.spanOffsets, spans.map(([start, end]) => [0, start, end]));
    assert.equal(late.spanEmbeddings.length, 2);
    assert.equal(late.sentenceEmbedding, undefined);
    const sentences = await client.embed([text], { ...CHUNK, pooling: 'none', split: 'sentences' });
    assert.ok(sentences.spanOffsets.length > 10);
    assert.equal(sentences.spanEmbeddings.length, sentences.spanOffsets.length);

    await assert.rejects(
      client.embed([text], { longText: 'chunk', chunkTokens: 100000 }),
      (error) => error.code === 3, // INVALID_ARGUMENT: over the model's window
    );
    if (process.env.BERTSERVE_NODE_LONG_OUT) {
      const report = {
        chunked: { lengths: chunked.lengths, sentence: b64(chunked.outputs.sentence_embedding), chunks: b64(chunked.outputs.chunk_embeddings), chunkSpans: chunked.chunkSpans },
        late: { spans: b64(late.outputs.span_embeddings), spanOffsets: late.spanOffsets },
        sentences: { spans: b64(sentences.outputs.span_embeddings), spanOffsets: sentences.spanOffsets },
      };
      fs.writeFileSync(process.env.BERTSERVE_NODE_LONG_OUT, JSON.stringify(report));
    }
  } finally {
    client.close();
  }
});
