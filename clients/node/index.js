'use strict';
// A small Node.js client of bertserve: loads ../../proto as it is, calls Embed
// and Tokenize, and decodes the raw little-endian tensors into typed arrays.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const PROTO_FILE = 'bertserve/v1/bertserve.proto';

function loadBertService() {
  const definition = protoLoader.loadSync(PROTO_FILE, {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto: input_ids, row_offset, ...
    longs: String, // uint64 shapes and timings: exact, as decimal strings
    enums: String, // 'DTYPE_FLOAT32', 'POOLING_MEAN', ...
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).bertserve.v1.BertService;
}

// IEEE half (binary16) bits -> number, exactly.
function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

// A Tensor message -> { dtype, shape: number[], data: Float32Array | Int32Array | BigInt64Array }.
// float16 and bfloat16 become Float32Array (both convert to float32 exactly).
function decodeTensor(tensor) {
  const shape = tensor.shape.map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const bytes = tensor.data; // a Buffer, possibly unaligned: read through a DataView
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dtype = tensor.dtype === 'DTYPE_UNSPECIFIED' ? 'DTYPE_FLOAT32' : tensor.dtype;
  const itemSize = { DTYPE_FLOAT32: 4, DTYPE_FLOAT16: 2, DTYPE_BFLOAT16: 2, DTYPE_INT32: 4, DTYPE_INT64: 8 }[dtype];
  if (itemSize === undefined) throw new Error(`unknown tensor dtype ${tensor.dtype}`);
  if (bytes.byteLength !== count * itemSize) {
    throw new Error(`tensor of shape [${shape}] and ${dtype} needs ${count * itemSize} bytes, got ${bytes.byteLength}`);
  }
  let data;
  if (dtype === 'DTYPE_FLOAT32') {
    data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = view.getFloat32(4 * i, true);
  } else if (dtype === 'DTYPE_FLOAT16') {
    data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = halfToFloat(view.getUint16(2 * i, true));
  } else if (dtype === 'DTYPE_BFLOAT16') {
    // bfloat16 is the upper half of a float32: shift it back into place.
    data = new Float32Array(count);
    const word = new DataView(new ArrayBuffer(4));
    for (let i = 0; i < count; i++) {
      word.setUint32(0, view.getUint16(2 * i, true) << 16 >>> 0, false);
      data[i] = word.getFloat32(0, false);
    }
  } else if (dtype === 'DTYPE_INT32') {
    data = new Int32Array(count);
    for (let i = 0; i < count; i++) data[i] = view.getInt32(4 * i, true);
  } else {
    data = new BigInt64Array(count);
    for (let i = 0; i < count; i++) data[i] = view.getBigInt64(8 * i, true);
  }
  return { dtype, shape, data };
}

// The TensorPieces of one answer -> { name: { shape, data } } with every row in place.
function assembleOutputs(pieces) {
  const outputs = {};
  for (const piece of pieces) {
    const tensor = decodeTensor(piece.tensor);
    const rowSize = tensor.shape.slice(1).reduce((a, b) => a * b, 1);
    const totalRows = Number(piece.total_rows) || tensor.shape[0];
    let output = outputs[piece.name];
    if (!output) {
      output = outputs[piece.name] = {
        shape: [totalRows, ...tensor.shape.slice(1)],
        data: new tensor.data.constructor(totalRows * rowSize),
        filled: 0,
      };
    }
    output.data.set(tensor.data, Number(piece.row_offset) * rowSize);
    output.filled += tensor.shape[0];
  }
  for (const [name, output] of Object.entries(outputs)) {
    if (output.filled !== output.shape[0]) throw new Error(`output ${name}: ${output.filled} of ${output.shape[0]} rows`);
    delete output.filled;
  }
  return outputs;
}

// Cut a packed (sum(lengths), hidden) output into one (length_i, hidden) view per sequence.
function splitRows(output, lengths) {
  const rowSize = output.shape.slice(1).reduce((a, b) => a * b, 1);
  const sequences = [];
  let row = 0;
  for (const length of lengths) {
    sequences.push(output.data.subarray(row * rowSize, (row + length) * rowSize));
    row += length;
  }
  return sequences;
}

const POOLINGS = { none: 'POOLING_NONE', cls: 'POOLING_CLS', pooler: 'POOLING_POOLER', mean: 'POOLING_MEAN', max: 'POOLING_MAX' };
const DTYPES = { float32: 'DTYPE_FLOAT32', float16: 'DTYPE_FLOAT16', bfloat16: 'DTYPE_BFLOAT16' };
const LONG_TEXTS = { truncate: 'LONG_TEXT_TRUNCATE', error: 'LONG_TEXT_ERROR', chunk: 'LONG_TEXT_CHUNK' };
const CHUNK_POOLINGS = { mean: 'CHUNK_POOLING_MEAN', max: 'CHUNK_POOLING_MAX', first: 'CHUNK_POOLING_FIRST' };
const SPLITS = { sentences: 'SPLIT_SENTENCES' };

function choice(kind, value, table) {
  if (value === undefined || value === null) return undefined;
  const found = table[value];
  if (!found) throw new Error(`unknown ${kind} ${value}; use one of: ${Object.keys(table).join(', ')}`);
  return found;
}

function count(name, value, least) {
  if (value === undefined || value === null) return undefined;
  if (!Number.isInteger(value) || value < least) throw new Error(`${name}=${value}: use a whole number of tokens, ${least} or more`);
  return value;
}

// A span as { text, start, end }: [start, end] (of text 0), [text, start, end] or { text, start, end }.
function toSpan(span) {
  const row = Array.isArray(span) ? (span.length === 2 ? [0, ...span] : span) : [span.text || 0, span.start, span.end];
  if (row.length !== 3 || !row.every((x) => Number.isInteger(x) && x >= 0)) {
    throw new Error(`span ${JSON.stringify(span)}: use [start, end] or [text, start, end], character offsets >= 0`);
  }
  if (row[1] >= row[2]) throw new Error(`span ${JSON.stringify(span)}: start must be before end`);
  return { text: row[0], start: row[1], end: row[2] };
}

// The EmbedRequest of texts and options (see BertClient.embed), checked before it is sent.
function embedRequest(texts, options = {}) {
  const request = {
    texts,
    model: options.model || '',
    variant: options.variant || '',
    token_embeddings: Boolean(options.tokens),
    pooling: options.pooling ? POOLINGS[options.pooling] : 'POOLING_UNSPECIFIED',
    layers: options.layers || [],
    normalize: Boolean(options.normalize),
    dtype: DTYPES[options.dtype || 'float32'],
    truncate: Boolean(options.truncate),
  };
  if (options.pooling && !request.pooling) throw new Error(`unknown pooling ${options.pooling}`);
  if (!request.dtype) throw new Error(`unknown dtype ${options.dtype}; use float32, float16 or bfloat16`);
  // Long documents: bertserve.v1's LongText.
  request.long_text = choice('longText', options.longText, LONG_TEXTS) || 'LONG_TEXT_UNSPECIFIED';
  request.chunk_tokens = count('chunkTokens', options.chunkTokens, 0) || 0;
  const overlap = count('chunkOverlap', options.chunkOverlap, 0);
  if (overlap !== undefined) {
    if (request.chunk_tokens && overlap >= request.chunk_tokens) {
      throw new Error(`chunkOverlap=${overlap} with chunkTokens=${request.chunk_tokens}: use 0..${request.chunk_tokens - 1}`);
    }
    request.chunk_overlap = overlap; // proto3 optional: sent (even 0) only when given
  }
  request.chunk_pooling = choice('chunkPooling', options.chunkPooling, CHUNK_POOLINGS) || 'CHUNK_POOLING_UNSPECIFIED';
  request.return_chunks = Boolean(options.returnChunks);
  const shaping = ['chunkTokens', 'chunkOverlap', 'chunkPooling', 'returnChunks'].filter((k) => options[k] !== undefined && options[k] !== false);
  if (shaping.length && request.long_text !== 'LONG_TEXT_CHUNK') {
    throw new Error(`${shaping.join(', ')} shape the windows of longText: 'chunk': set it too`);
  }
  request.spans = (options.spans || []).map(toSpan);
  for (const span of request.spans) {
    if (span.text >= texts.length) throw new Error(`span ${JSON.stringify(span)} names text ${span.text} of a call with ${texts.length} texts`);
  }
  request.split = choice('split', options.split, SPLITS) || 'SPLIT_NONE';
  if (request.spans.length && options.split) throw new Error('give spans or split, not both (split makes the spans)');
  return request;
}

// Rows of an (n, 3) int32 output as [text, start, end] arrays.
function rowsOf3(output) {
  const rows = [];
  for (let i = 0; i < output.shape[0]; i++) rows.push(Array.from(output.data.subarray(3 * i, 3 * i + 3)));
  return rows;
}

class BertClient {
  // target: 'host:port'; options.token: a bearer token; options.credentials: grpc credentials (TLS).
  constructor(target = process.env.BERTSERVE_TARGET || '127.0.0.1:50051', options = {}) {
    const BertService = loadBertService();
    this.client = new BertService(target, options.credentials || grpc.credentials.createInsecure());
    this.metadata = new grpc.Metadata();
    if (options.token) this.metadata.set('authorization', `Bearer ${options.token}`);
    this.deadlineMs = options.deadlineMs || 60000;
  }

  _unary(method, request) {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + this.deadlineMs);
      this.client[method](request, this.metadata, { deadline }, (error, response) => {
        if (error) {
          const wrapped = new Error(`${grpc.status[error.code]}: ${error.details}`);
          wrapped.code = error.code;
          wrapped.details = error.details;
          reject(wrapped);
        } else {
          resolve(response);
        }
      });
    });
  }

  // texts: string[]; options: { pooling, tokens, layers: number[], normalize, dtype, model, variant, truncate,
  //   longText: 'truncate' | 'error' | 'chunk', chunkTokens, chunkOverlap, chunkPooling: 'mean' | 'max' | 'first',
  //   returnChunks, spans: ([start, end] | [text, start, end])[], split: 'sentences' }.
  // Resolves to { model, variant, lengths, truncated, outputs, sentenceEmbedding: Float32Array[] (one per text),
  // tokenEmbeddings: Float32Array[] (length_i * hidden each) | undefined, hidden: number,
  // chunkEmbeddings / spanEmbeddings: Float32Array[] (one per window / span) | undefined,
  // chunkSpans / spanOffsets: [text, start, end][] (characters, code points) | undefined }.
  async embed(texts, options = {}) {
    const request = embedRequest(texts, options);
    const response = await this._unary('Embed', request);
    const outputs = assembleOutputs(response.outputs);
    const lengths = response.lengths.map(Number);
    const result = { model: response.model, variant: response.variant, lengths, truncated: response.truncated.map(Number), outputs };
    const sentence = outputs.sentence_embedding;
    if (sentence) {
      result.hidden = sentence.shape[1];
      result.sentenceEmbedding = splitRows(sentence, lengths.map(() => 1));
    }
    if (outputs.token_embeddings) result.tokenEmbeddings = splitRows(outputs.token_embeddings, lengths);
    for (const [name, key] of [['chunk_embeddings', 'chunkEmbeddings'], ['span_embeddings', 'spanEmbeddings']]) {
      if (outputs[name]) result[key] = splitRows(outputs[name], Array(outputs[name].shape[0]).fill(1));
    }
    if (outputs.chunk_spans) result.chunkSpans = rowsOf3(outputs.chunk_spans);
    if (outputs.span_offsets) result.spanOffsets = rowsOf3(outputs.span_offsets);
    return result;
  }

  // Resolves to one { tokens, input_ids, attention_mask, token_type_ids, offsets, truncated } per text.
  async tokenize(texts, options = {}) {
    const response = await this._unary('Tokenize', {
      texts,
      model: options.model || '',
      pad_to: options.padTo || 0,
      truncate: Boolean(options.truncate),
    });
    return response.encodings;
  }

  close() {
    this.client.close();
  }
}

module.exports = { BertClient, decodeTensor, halfToFloat, assembleOutputs, splitRows, loadBertService, embedRequest };
