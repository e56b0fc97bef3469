'use strict';
// The Open Inference Protocol example (v2.js). Run by tests/oip/test_oip_node.py against a
// live server (BERTSERVE_TARGET); the vectors it writes to BERTSERVE_NODE_V2_OUT are compared
// bit for bit with Embed's from the Python client.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { InferenceClient, packStrings, unpackStrings } = require('../v2');

const TEXTS = ['I love Paris', 'The quick brown fox jumps over the lazy dog.', 'héllo 👋'];

test('BYTES tensors pack as a 4-byte length and UTF-8', () => {
  const packed = packStrings(['ab', 'é']);
  assert.deepEqual([...packed], [2, 0, 0, 0, 97, 98, 2, 0, 0, 0, 0xc3, 0xa9]);
  assert.deepEqual(unpackStrings(packed), ['ab', 'é']);
});

const target = process.env.BERTSERVE_TARGET;

test('ModelInfer against a live server', { skip: !target && 'BERTSERVE_TARGET is not set' }, async () => {
  const client = new InferenceClient(target);
  try {
    assert.equal(await client.ready(), true);
    const metadata = await client.metadata('minilm');
    assert.ok(metadata.versions.includes('fp32-opt'));
    // minilm: TEXT in, sentence_embedding out; minilm.features: every input and output
    assert.deepEqual(metadata.inputs, [{ name: 'TEXT', datatype: 'BYTES', shape: ['-1', '1'] }]);
    const result = await client.inferText('minilm.features', TEXTS, {
      version: 'fp32-opt',
      outputs: ['sentence_embedding', 'lengths'],
      parameters: { pooling: 'mean', normalize: true },
    });
    assert.equal(result.version, 'fp32-opt');
    const { shape, data } = result.outputs.sentence_embedding;
    assert.deepEqual(shape, [TEXTS.length, 384]);
    await assert.rejects(client.inferText('minilm', TEXTS, { outputs: ['nope'] }), (error) => error.code === 3);
    await assert.rejects(client.inferText('nope', TEXTS), (error) => error.code === 5);
    if (process.env.BERTSERVE_NODE_V2_OUT) {
      fs.writeFileSync(
        process.env.BERTSERVE_NODE_V2_OUT,
        JSON.stringify({
          texts: TEXTS,
          lengths: Array.from(result.outputs.lengths.data, Number),
          sentence: Buffer.from(data.buffer).toString('base64'),
        }),
      );
    }
  } finally {
    client.close();
  }
});
