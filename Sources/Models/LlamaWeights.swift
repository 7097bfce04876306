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
}

/// All weights of a Llama-family model on a backend.
public struct LlamaWeights {
    public var embedding: DeviceTensor
    public var layers: [LayerWeights]
    public var finalNorm: DeviceTensor
    /// The embedding itself when `tie_word_embeddings` is set.
    public var lmHead: DeviceTensor

    /// Loads and checks every tensor against `config`; a missing tensor or a wrong shape is an
    /// error naming the file and the tensor.
    public static func load(from store: WeightStore, config c: ModelConfig, backend: ComputeBackend) throws -> LlamaWeights {
        func tensor(_ name: String, _ shape: [Int]) throws -> DeviceTensor {
            try store.withTensor(name, shape: shape) { dtype, bytes in
                try backend.uploadWeights(bytes, dtype: dtype, shape: Shape(shape))
            }
        }
        /// Concatenates tensors along dimension 0 on the host, then uploads once.
        func stacked(_ parts: [(String, [Int])]) throws -> DeviceTensor {
            let rows = parts.reduce(0) { $0 + $1.1[0] }
            let rest = Array(parts[0].1.dropFirst())
            var host = [Float](repeating: 0, count: rows * rest.reduce(1, *))
            var offset = 0
            for (name, shape) in parts {
                let values = try store.floats(name, shape: shape)
                host.replaceSubrange(offset..<(offset + values.count), with: values)
                offset += values.count
            }
            return try host.withUnsafeBytes {
                try backend.uploadWeights($0.baseAddress!, dtype: .f32, shape: Shape([rows] + rest))
            }
        }
        let h = c.hiddenSize
        let embedding = try tensor("model.embed_tokens.weight", [c.vocabSize, h])
        var layers: [LayerWeights] = []
        for i in 0..<c.numLayers {
            let p = "model.layers.\(i)."
            let qkvParts: [(String, [Int])] = [
                ("\(p)self_attn.q_proj.weight", [c.qSize, h]),
                ("\(p)self_attn.k_proj.weight", [c.kvSize, h]),
                ("\(p)self_attn.v_proj.weight", [c.kvSize, h]),
            ]
            let bias: DeviceTensor? = c.hasQKVBias ? try stacked([
                ("\(p)self_attn.q_proj.bias", [c.qSize]),
                ("\(p)self_attn.k_proj.bias", [c.kvSize]),
                ("\(p)self_attn.v_proj.bias", [c.kvSize]),
            ]) : nil
            layers.append(LayerWeights(
                inputNorm: try tensor("\(p)input_layernorm.weight", [h]),
                qkv: try stacked(qkvParts),
                qkvBias: bias,
                o: try tensor("\(p)self_attn.o_proj.weight", [h, c.qSize]),
                postAttentionNorm: try tensor("\(p)post_attention_layernorm.weight", [h]),
                gateUp: try stacked([
                    ("\(p)mlp.gate_proj.weight", [c.intermediateSize, h]),
                    ("\(p)mlp.up_proj.weight", [c.intermediateSize, h]),
                ]),
                down: try tensor("\(p)mlp.down_proj.weight", [h, c.intermediateSize])
            ))
        }
        let finalNorm = try tensor("model.norm.weight", [h])
        let lmHead: DeviceTensor
        if c.tieWordEmbeddings || !store.contains("lm_head.weight") {
            guard c.tieWordEmbeddings else { throw LoomError.missingTensor(path: store.directory, tensor: "lm_head.weight") }
            lmHead = embedding
        } else {
            lmHead = try tensor("lm_head.weight", [c.vocabSize, h])
        }
        return LlamaWeights(embedding: embedding, layers: layers, finalNorm: finalNorm, lmHead: lmHead)
    }
}
