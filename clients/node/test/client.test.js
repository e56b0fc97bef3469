'use strict';
// Run by tests/client/test_node_client.py against a live server (BERTSERVE_TARGET);
// the vectors it writes to BERTSERVE_NODE_OUT are compared bit for bit with Python's.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { BertClient, decodeTensor, halfToFloat } = require('..');

const TEXTS = ['I love Paris', 'The quick brown fox jumps over the lazy dog.', 'bertserve'];

test('half floats decode exactly', () => {
  assert.equal(halfToFloat(0x3c00), 1);
  assert.equal(halfToFloat(0xc000), -2);
  assert.equal(halfToFloat(0x7bff), 65504);
  assert.equal(halfToFloat(0x0001), 2 ** -24);
  assert.equal(halfToFloat(0xfc00), -Infinity);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
});

test('tensors decode from little-endian bytes', () => {
  const f32 = Buffer.alloc(8);
  f32.writeFloatLE(1.5, 0);
  f32.writeFloatLE(-0.25, 4);
  assert.deepEqual(Array.from(decodeTensor({ dtype: 'DTYPE_FLOAT32', shape: ['2'], data: f32 }).data), [1.5, -0.25]);
  const bf16 = Buffer.from([0x80, 0x3f, 0x20, 0xc0]); // 1.0 and -2.5 as the upper halves of float32
  assert.deepEqual(Array.from(decodeTensor({ dtype: 'DTYPE_BFLOAT16', shape: ['2'], data: bf16 }).data), [1, -2.5]);
  assert.throws(() => decodeTensor({ dtype: 'DTYPE_FLOAT32', shape: ['3'], data: f32 }), /needs 12 bytes, got 8/);
});

const target = process.env.BERTSERVE_TARGET;

test('Embed and Tokenize against a live server', { skip: !target && 'BERTSERVE_TARGET is not set' }, async () => {
  const client = new BertClient(target);
  try {
    const [encoding] = await client.tokenize(['I love Paris'], { padTo: 7 });
    assert.deepEqual(encoding.input_ids, [101, 1045, 2293, 3000, 102, 0, 0]);
    assert.deepEqual(encoding.attention_mask, [1, 1, 1, 1, 1, 0, 0]);
    assert.deepEqual(encoding.tokens.slice(0, 5), ['[CLS]', 'i', 'love', 'paris', '[SEP]']);

    const report = {};
    for (const dtype of ['float32', 'float16', 'bfloat16']) {
      const result = await client.embed(TEXTS, { dtype, tokens: true, pooling: 'mean' });
      assert.equal(result.sentenceEmbedding.length, TEXTS.length);
      assert.equal(result.tokenEmbeddings.length, TEXTS.length);
      result.tokenEmbeddings.forEach((t, i) => assert.equal(t.length, result.lengths[i] * result.hidden));
      report[dtype] = {
        lengths: result.lengths,
        hidden: result.hidden,
        sentence: Buffer.from(result.outputs.sentence_embedding.data.buffer).toString('base64'),
        tokens: Buffer.from(result.outputs.token_embeddings.data.buffer).toString('base64'),
      };
    }
    await assert.rejects(client.embed(TEXTS, { layers: [99] }), (error) => error.code === 3);
    if (process.env.BERTSERVE_NODE_OUT) fs.writeFileSync(process.env.BERTSERVE_NODE_OUT, JSON.stringify({ texts: TEXTS, report }));
  } finally {
    client.close();
  }
});
