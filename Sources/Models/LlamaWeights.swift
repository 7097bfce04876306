import Foundation
import LoomCore
import ModelFormats

/// The weights of one decoder layer, with q/k/v and gate/up stacked so each runs as one GEMM.
public struct LayerWeights {
    public var inputNorm: DeviceTensor
    /// `[q + k + v, hidden]`.
    public var qkv: DeviceTensor
    public var qkvBias: DeviceTensor?
    /// `[hidden, q]`.
    public var o: DeviceTensor
    public var postAttentionNorm: DeviceTensor
    /// `[2·intermediate, hidden]`: gate rows, then up rows.
    public var gateUp: DeviceTensor
    /// `[hidden, intermediate]`.
    public var down: DeviceTensor

    public init(inputNorm: DeviceTensor, qkv: DeviceTensor, qkvBias: DeviceTensor?, o: DeviceTensor, postAttentionNorm: DeviceTensor, gateUp: DeviceTensor, down: DeviceTensor) {
        self.inputNorm = inputNorm
        self.qkv = qkv
        self.qkvBias = qkvBias
        self.o = o
        self.postAttentionNorm = postAttentionNorm
        self.gateUp = gateUp
        self.down = down
    }
}

/// All weights of a Llama-family model on a backend.
public struct LlamaWeights {
    public var embedding: DeviceTensor
    public var layers: [LayerWeights]
    public var finalNorm: DeviceTensor
    /// The embedding itself when `tie_word_embeddings` is set.
    public var lmHead: DeviceTensor

    public init(embedding: DeviceTensor, layers: [LayerWeights], finalNorm: DeviceTensor, lmHead: DeviceTensor) {
        self.embedding = embedding
        self.layers = layers
        self.finalNorm = finalNorm
        self.lmHead = lmHead
    }

    /// Loads and checks every tensor against `config`; a missing tensor or a wrong shape is an
    /// error naming the file and the tensor. With a `shard`, loads that rank's Megatron slice:
    /// q/k/v and gate/up by output rows, o and down by input columns, the vocabulary by rows.
    /// `progress` is called after each layer with the number of layers loaded so far.
    public static func load(from store: WeightStore, config c: ModelConfig, backend: ComputeBackend, shard: TensorShard = .whole,
                            progress: ((Int) -> Void)? = nil) throws -> LlamaWeights {
        /// Rows `rows` and columns `cols` of a 2-D tensor (or elements `rows` of a 1-D one), as bytes
        /// of its stored dtype: slices and concatenations never convert, so a bf16 checkpoint reaches
        /// a bf16 device unchanged and without an f32 copy on the host.
        func slice(_ name: String, _ shape: [Int], rows: Range<Int>? = nil, cols: Range<Int>? = nil) throws -> Part {
            try store.withTensor(name, shape: shape) { dtype, bytes in
                let e = dtype.byteCount, r = rows ?? 0..<shape[0]
                let width = shape.count == 1 ? 1 : shape[1], c = shape.count == 1 ? 0..<1 : (cols ?? 0..<width)
                var out = [UInt8](repeating: 0, count: r.count * c.count * e)
                out.withUnsafeMutableBytes { dst in
                    for (k, i) in r.enumerated() {
                        (dst.baseAddress! + k * c.count * e).copyMemory(from: bytes + (i * width + c.lowerBound) * e, byteCount: c.count * e)
                    }
                }
                return Part(dtype: dtype, bytes: out)
            }
        }
        /// Parts stacked by rows (then `zeroRows` rows of zeros) into one tensor of `shape`, uploaded from
        /// the parts' dtype; parts stored in different dtypes meet in f32.
        func upload(_ parts: [Part], _ shape: [Int], zeroRows: Int = 0) throws -> DeviceTensor {
            let dtype = parts.allSatisfy({ $0.dtype == parts[0].dtype }) ? parts[0].dtype : .f32
            var bytes: [UInt8] = []
            for part in parts { bytes += part.dtype == dtype ? part.bytes : part.floatBytes }
            bytes += [UInt8](repeating: 0, count: zeroRows * (shape.count == 1 ? 1 : shape[1]) * dtype.byteCount)
            precondition(bytes.count == shape.reduce(1, *) * dtype.byteCount, "\(bytes.count) bytes for \(shape) of \(dtype)")
            return try bytes.withUnsafeBytes { try backend.uploadWeights($0.baseAddress!, dtype: dtype, shape: Shape(shape)) }
        }
        /// Row ranges of 2-D tensors of `width` columns stacked by rows, uploaded part by part from
        /// the store's bytes (`uploadWeights(stacking:)`: no host copy where the backend needs none);
        /// parts stored in different dtypes meet in f32 through `upload`.
        func stacked(_ specs: [(name: String, shape: [Int], rows: Range<Int>)], width: Int) throws -> DeviceTensor {
            let shape = [specs.reduce(0) { $0 + $1.rows.count }, width]
            func withParts(from i: Int, _ parts: [Part.View]) throws -> DeviceTensor {
                guard i < specs.count else {
                    if parts.allSatisfy({ $0.dtype == parts[0].dtype }) {
                        return try backend.uploadWeights(stacking: parts.map(\.bytes), dtype: parts[0].dtype, shape: Shape(shape))
                    }
                    return try upload(parts.map { Part(dtype: $0.dtype, bytes: Array($0.bytes)) }, shape)
                }
                let spec = specs[i]
                return try store.withTensor(spec.name, shape: spec.shape) { dtype, bytes in
                    let rowBytes = width * dtype.byteCount
                    let part = UnsafeRawBufferPointer(start: bytes + spec.rows.lowerBound * rowBytes, count: spec.rows.count * rowBytes)
                    return try withParts(from: i + 1, parts + [Part.View(dtype: dtype, bytes: part)])
                }
            }
            return try withParts(from: 0, [])
        }
        /// A whole tensor, uploaded from its stored dtype without a host copy.
        func tensor(_ name: String, _ shape: [Int]) throws -> DeviceTensor {
            try store.withTensor(name, shape: shape) { dtype, bytes in
                try backend.uploadWeights(bytes, dtype: dtype, shape: Shape(shape))
            }
        }
        let h = c.hiddenSize, d = c.headDim
        let isSharded = shard.size > 1
        let q = shard.heads(c), kv = shard.kvHeads(c), inter = shard.intermediate(c)
        let qRows = (q.lowerBound * d)..<(q.upperBound * d), kvRows = (kv.lowerBound * d)..<(kv.upperBound * d)
        let vocabRows = shard.vocab(c), vocabPadded = shard.vocabPerRank(c)
        /// This rank's vocabulary rows, padded to `vocabPadded` rows plus `extra` zero rows.
        func vocabTensor(_ name: String, extra: Int) throws -> DeviceTensor {
            try upload([try slice(name, [c.vocabSize, h], rows: vocabRows)], [vocabPadded + extra, h],
                       zeroRows: vocabPadded - vocabRows.count + extra)
        }
        let embedding = isSharded ? try vocabTensor("model.embed_tokens.weight", extra: 1)
                                  : try tensor("model.embed_tokens.weight", [c.vocabSize, h])
        var layers: [LayerWeights] = []
        for i in 0..<c.numLayers {
            let p = "model.layers.\(i)."
            let bias: DeviceTensor? = c.hasQKVBias ? try upload(
                [try slice("\(p)self_attn.q_proj.bias", [c.qSize], rows: qRows),
                 try slice("\(p)self_attn.k_proj.bias", [c.kvSize], rows: kvRows),
                 try slice("\(p)self_attn.v_proj.bias", [c.kvSize], rows: kvRows)],
                [qRows.count + 2 * kvRows.count]) : nil
            layers.append(LayerWeights(
                inputNorm: try tensor("\(p)input_layernorm.weight", [h]),
                qkv: try stacked([("\(p)self_attn.q_proj.weight", [c.qSize, h], qRows), ("\(p)self_attn.k_proj.weight", [c.kvSize, h], kvRows),
                                  ("\(p)self_attn.v_proj.weight", [c.kvSize, h], kvRows)], width: h),
                qkvBias: bias,
                o: isSharded ? try upload([try slice("\(p)self_attn.o_proj.weight", [h, c.qSize], cols: qRows)], [h, qRows.count])
                             : try tensor("\(p)self_attn.o_proj.weight", [h, c.qSize]),
                postAttentionNorm: try tensor("\(p)post_attention_layernorm.weight", [h]),
                gateUp: try stacked([("\(p)mlp.gate_proj.weight", [c.intermediateSize, h], inter), ("\(p)mlp.up_proj.weight", [c.intermediateSize, h], inter)],
                                    width: h),
                down: isSharded ? try upload([try slice("\(p)mlp.down_proj.weight", [h, c.intermediateSize], cols: inter)], [h, inter.count])
                                : try tensor("\(p)mlp.down_proj.weight", [h, c.intermediateSize])
            ))
            progress?(i + 1)
        }
        let finalNorm = try tensor("model.norm.weight", [h])
        let lmHead: DeviceTensor
        if c.tieWordEmbeddings || !store.contains("lm_head.weight") {
            guard c.tieWordEmbeddings else { throw LoomError.missingTensor(path: store.directory, tensor: "lm_head.weight") }
            lmHead = isSharded ? embedding.rows(vocabPadded) : embedding
        } else {
            lmHead = isSharded ? try vocabTensor("lm_head.weight", extra: 0) : try tensor("lm_head.weight", [c.vocabSize, h])
        }
        return LlamaWeights(embedding: embedding, layers: layers, finalNorm: finalNorm, lmHead: lmHead)
    }
}

/// A slice of a stored tensor: its bytes, in the dtype the checkpoint stores.
struct Part {
    var dtype: DType
    var bytes: [UInt8]

    /// A slice in place: the store's bytes, valid inside its `withTensor`.
    struct View {
        var dtype: DType
        var bytes: UnsafeRawBufferPointer
    }

    /// The same values as f32 bytes (to stack with parts of another dtype).
    var floatBytes: [UInt8] {
        let count = bytes.count / dtype.byteCount
        var floats = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { raw in
            floats.withUnsafeMutableBufferPointer { HalfConversion.toFloat(raw.baseAddress!, dtype: dtype, count: count, into: $0.baseAddress!) }
        }
        return floats.withUnsafeBytes { Array($0) }
    }
}
