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
        /// Rows `rows` and columns `cols` of a 2-D tensor (or elements `rows` of a 1-D one).
        func slice(_ name: String, _ shape: [Int], rows: Range<Int>? = nil, cols: Range<Int>? = nil) throws -> [Float] {
            let full = try store.floats(name, shape: shape)
            let r = rows ?? 0..<shape[0]
            if shape.count == 1 { return Array(full[r]) }
            let width = shape[1], c = cols ?? 0..<width
            if r.count == shape[0] && c.count == width { return full }
            var out: [Float] = []
            out.reserveCapacity(r.count * c.count)
            for i in r { out += full[(i * width + c.lowerBound)..<(i * width + c.upperBound)] }
            return out
        }
        func upload(_ values: [Float], _ shape: [Int]) throws -> DeviceTensor {
            try values.withUnsafeBytes { try backend.uploadWeights($0.baseAddress!, dtype: .f32, shape: Shape(shape)) }
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
            var rows = try slice(name, [c.vocabSize, h], rows: vocabRows)
            rows += [Float](repeating: 0, count: (vocabPadded - vocabRows.count + extra) * h)
            return try upload(rows, [vocabPadded + extra, h])
        }
        let embedding = isSharded ? try vocabTensor("model.embed_tokens.weight", extra: 1)
                                  : try tensor("model.embed_tokens.weight", [c.vocabSize, h])
        var layers: [LayerWeights] = []
        for i in 0..<c.numLayers {
            let p = "model.layers.\(i)."
            let qkv = try slice("\(p)self_attn.q_proj.weight", [c.qSize, h], rows: qRows)
                + slice("\(p)self_attn.k_proj.weight", [c.kvSize, h], rows: kvRows)
                + slice("\(p)self_attn.v_proj.weight", [c.kvSize, h], rows: kvRows)
            let bias: DeviceTensor? = c.hasQKVBias ? try upload(
                try slice("\(p)self_attn.q_proj.bias", [c.qSize], rows: qRows)
                    + slice("\(p)self_attn.k_proj.bias", [c.kvSize], rows: kvRows)
                    + slice("\(p)self_attn.v_proj.bias", [c.kvSize], rows: kvRows),
                [qRows.count + 2 * kvRows.count]) : nil
            let gateUp = try slice("\(p)mlp.gate_proj.weight", [c.intermediateSize, h], rows: inter)
                + slice("\(p)mlp.up_proj.weight", [c.intermediateSize, h], rows: inter)
            layers.append(LayerWeights(
                inputNorm: try tensor("\(p)input_layernorm.weight", [h]),
                qkv: try upload(qkv, [qRows.count + 2 * kvRows.count, h]),
                qkvBias: bias,
                o: isSharded ? try upload(try slice("\(p)self_attn.o_proj.weight", [h, c.qSize], cols: qRows), [h, qRows.count])
                             : try tensor("\(p)self_attn.o_proj.weight", [h, c.qSize]),
                postAttentionNorm: try tensor("\(p)post_attention_layernorm.weight", [h]),
                gateUp: try upload(gateUp, [2 * inter.count, h]),
                down: isSharded ? try upload(try slice("\(p)mlp.down_proj.weight", [h, c.intermediateSize], cols: inter), [h, inter.count])
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
