import CUDABackend
import Foundation
import LoomCore
import ModelFormats

/// Configs of named shapes, written with a sparse safetensors file whose tensors are never read:
/// the backend fills them on the device (`CUDABackend.randomWeightSeed`).
enum RandomModel {
    /// The named shapes (`ModelConfig.namedShapes`).
    static var shapeNames: [String] { ModelConfig.knownShapeNames }

    /// The seed of every random-weight run, so two runs of one shape compute the same thing.
    static let seed: UInt64 = 42

    /// Runs `load` with `randomWeightSeed` set on every GPU, so the weights it uploads are made on
    /// the device, and clears it afterwards (on error too): later uploads are real data again.
    static func loading<R>(on gpus: [CUDABackend], _ load: () throws -> R) rethrows -> R {
        for g in gpus { g.randomWeightSeed = seed }
        defer {
            for g in gpus {
                g.randomWeightSeed = nil
                g.synchronize()
            }
        }
        return try load()
    }

    /// The files a tokenizer folder may hold (`Tokenizer` and `ChatTemplate` read the first three).
    static let tokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "added_tokens.json"]

    /// Copies the tokenizer files of `source` into the random model folder `directory`: the engine
    /// reads its tokenizer from the model folder, as from a checkpoint.
    static func addTokenizer(from source: String, to directory: String) throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: (source as NSString).appendingPathComponent("tokenizer.json")) else {
            throw LoomError.invalidArgument("no tokenizer.json in \(source)")
        }
        for file in tokenizerFiles {
            let from = (source as NSString).appendingPathComponent(file), to = (directory as NSString).appendingPathComponent(file)
            try? fm.removeItem(atPath: to)
            if fm.fileExists(atPath: from) { try fm.copyItem(atPath: from, toPath: to) }
        }
    }

    /// Writes `config.json` and a sparse F32 `model.safetensors` (no data blocks) of a named shape
    /// under the temporary folder.
    static func write(_ name: String) throws -> String {
        try write(ModelConfig.named(name), folder: name)
    }

    /// The same for the shape `c`, in the temporary folder `loom-random-<folder>`.
    static func write(_ c: ModelConfig, folder: String) throws -> String {
        let dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("loom-random-\(folder)")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var config: [String: Any] = [
            "architectures": [c.architecture.rawValue], "vocab_size": c.vocabSize, "hidden_size": c.hiddenSize,
            "intermediate_size": c.intermediateSize, "num_hidden_layers": c.numLayers, "num_attention_heads": c.numHeads,
            "num_key_value_heads": c.numKVHeads, "head_dim": c.headDim, "rope_theta": c.ropeTheta, "rms_norm_eps": Double(c.rmsNormEps),
            "tie_word_embeddings": c.tieWordEmbeddings, "max_position_embeddings": c.maxPositionEmbeddings,
            "hidden_act": "silu", "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2,
        ]
        if let r = c.ropeScaling {
            config["rope_scaling"] = ["rope_type": "llama3", "factor": r.factor, "low_freq_factor": r.lowFreqFactor,
                                      "high_freq_factor": r.highFreqFactor, "original_max_position_embeddings": r.originalMaxPositionEmbeddings]
        }
        if c.hasQKVBias { config["attention_bias"] = true }
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]).write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("config.json")))

        var tensors: [(String, [Int])] = [("model.embed_tokens.weight", [c.vocabSize, c.hiddenSize])]
        let q = c.numHeads * c.headDim, kv = c.numKVHeads * c.headDim
        for i in 0..<c.numLayers {
            let p = "model.layers.\(i)."
            tensors += [("\(p)input_layernorm.weight", [c.hiddenSize]), ("\(p)post_attention_layernorm.weight", [c.hiddenSize]),
                        ("\(p)self_attn.q_proj.weight", [q, c.hiddenSize]), ("\(p)self_attn.k_proj.weight", [kv, c.hiddenSize]),
                        ("\(p)self_attn.v_proj.weight", [kv, c.hiddenSize]), ("\(p)self_attn.o_proj.weight", [c.hiddenSize, q]),
                        ("\(p)mlp.gate_proj.weight", [c.intermediateSize, c.hiddenSize]), ("\(p)mlp.up_proj.weight", [c.intermediateSize, c.hiddenSize]),
                        ("\(p)mlp.down_proj.weight", [c.hiddenSize, c.intermediateSize])]
            if c.hasQKVBias {
                tensors += [("\(p)self_attn.q_proj.bias", [q]), ("\(p)self_attn.k_proj.bias", [kv]), ("\(p)self_attn.v_proj.bias", [kv])]
            }
        }
        tensors.append(("model.norm.weight", [c.hiddenSize]))
        if !c.tieWordEmbeddings { tensors.append(("lm_head.weight", [c.vocabSize, c.hiddenSize])) }
        var header: [String: Any] = [:]
        var offset = 0
        for (tensorName, shape) in tensors {
            let bytes = shape.reduce(1, *) * 4
            header[tensorName] = ["dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var file = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(json)
        let path = (dir as NSString).appendingPathComponent("model.safetensors")
        try file.write(to: URL(fileURLWithPath: path))
        guard truncate(path, off_t(file.count + offset)) == 0 else {
            throw LoomError.invalidFile(path: path, reason: "cannot extend to \(file.count + offset) bytes")
        }
        return dir
    }
}

#if canImport(Glibc)
import Glibc
#endif
