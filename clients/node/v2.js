'use strict';
// The Open Inference Protocol (KServe v2) from Node.js: loads
// proto/bertserve/inference/grpc_service.proto as it is and calls
// inference.GRPCInferenceService, as it would call Triton or KServe.
//
//   node v2.js 127.0.0.1:50051 "I love Paris" "Paris is lovely"

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const PROTO_FILE = 'bertserve/inference/grpc_service.proto';

function loadInferenceService() {
  const definition = protoLoader.loadSync(PROTO_FILE, {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // model_name, raw_input_contents, ... as in the .proto
    longs: String, // int64 shapes: exact, as decimal strings
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).inference.GRPCInferenceService;
}

// BYTES tensor contents: each element a 4-byte little-endian length, then its UTF-8 bytes.
function packStrings(texts) {
  return Buffer.concat(
    texts.flatMap((text) => {
      const bytes = Buffer.from(text, 'utf8');
      const length = Buffer.alloc(4);
      length.writeUInt32LE(bytes.length);
      return [length, bytes];
    }),
  );
}

function unpackStrings(buffer) {
  const items = [];
  for (let offset = 0; offset < buffer.length; ) {
    const length = buffer.readUInt32LE(offset);
    items.push(buffer.subarray(offset + 4, offset + 4 + length).toString('utf8'));
    offset += 4 + length;
  }
  return items;
}

// One output tensor of a ModelInferResponse (raw contents) -> { datatype, shape, data }.
function decodeOutput(output, raw) {
  const shape = output.shape.map(Number);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let data;
  if (output.datatype === 'FP32') {
    data = new Float32Array(raw.byteLength / 4);
    for (let i = 0; i < data.length; i++) data[i] = view.getFloat32(4 * i, true);
  } else if (output.datatype === 'INT64') {
    data = new BigInt64Array(raw.byteLength / 8);
    for (let i = 0; i < data.length; i++) data[i] = view.getBigInt64(8 * i, true);
  } else if (output.datatype === 'BYTES') {
    data = unpackStrings(raw);
  } else {
    throw new Error(`output ${output.name}: datatype ${output.datatype} is not decoded here (ask for FP32)`);
  }
  return { datatype: output.datatype, shape, data };
}

// A request parameter as the protocol's InferParameter oneof.
function parameter(value) {
  if (typeof value === 'boolean') return { bool_param: value };
  if (Number.isInteger(value)) return { int64_param: String(value) };
  return { string_param: String(value) };
}

class InferenceClient {
  constructor(target, credentials = grpc.credentials.createInsecure()) {
    const Service = loadInferenceService();
    this.stub = new Service(target, credentials);
  }

  call(method, request, metadata = new grpc.Metadata()) {
    return new Promise((resolve, reject) => {
      this.stub[method](request, metadata, (error, response) => (error ? reject(error) : resolve(response)));
    });
  }

  async ready() {
    return (await this.call('ServerReady', {})).ready;
  }

  metadata(model, version = '') {
    return this.call('ModelMetadata', { name: model, version });
  }

  // Texts in, the named outputs back: { name: { datatype, shape, data } }, plus the version
  // (variant) that answered. options: { version, outputs: [...], parameters: {...} }.
  async inferText(model, texts, { version = '', outputs = ['sentence_embedding'], parameters = {} } = {}) {
    const request = {
      model_name: model,
      model_version: version,
      inputs: [{ name: 'TEXT', datatype: 'BYTES', shape: [String(texts.length)] }],
      raw_input_contents: [packStrings(texts)],
      outputs: outputs.map((name) => ({ name })),
      parameters: Object.fromEntries(Object.entries(parameters).map(([k, v]) => [k, parameter(v)])),
    };
    const response = await this.call('ModelInfer', request);
    const result = { model: response.model_name, version: response.model_version, outputs: {} };
    response.outputs.forEach((output, index) => {
      result.outputs[output.name] = decodeOutput(output, response.raw_output_contents[index]);
    });
    return result;
  }

  close() {
    this.stub.close();
  }
}

module.exports = { InferenceClient, packStrings, unpackStrings };

if (require.main === module) {
  const [target = '127.0.0.1:50051', ...texts] = process.argv.slice(2);
  const client = new InferenceClient(target);
  client
    .inferText('minilm', texts.length ? texts : ['I love Paris'])
    .then((result) => {
      const { shape, data } = result.outputs.sentence_embedding;
      console.log(`${result.model} ${result.version}: sentence_embedding [${shape}]`, Array.from(data.slice(0, 4)));
    })
    .catch((error) => {
      console.error(`${error.code} ${error.details}`);
      process.exitCode = 1;
    })
    .finally(() => client.close());
}
