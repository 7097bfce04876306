import Foundation
import LoomCore

extension ModelConfig {
    /// Reads `config.json` (and `generation_config.json` for extra EOS ids) from a model folder.
    public static func load(directory: String) throws -> ModelConfig {
        let path = (directory as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: path) else { throw LoomError.fileNotFound(path: path) }
        var config = try parse(data, path: path)
        let genPath = (directory as NSString).appendingPathComponent("generation_config.json")
        if let genData = FileManager.default.contents(atPath: genPath),
           let gen = try? JSONSerialization.jsonObject(with: genData) as? [String: Any] {
            for id in intList(gen["eos_token_id"]) where !config.eosTokenIds.contains(id) {
                config.eosTokenIds.append(id)
            }
        }
        return config
    }

    /// Parses the JSON of a `config.json`; `path` names the file in errors.
    public static func parse(_ data: Data, path: String) throws -> ModelConfig {
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LoomError.invalidFile(path: path, reason: "not a JSON object")
        }
        func int(_ key: String) throws -> Int {
            guard let n = (json[key] as? NSNumber)?.intValue, n > 0 else {
                throw LoomError.invalidFile(path: path, reason: "'\(key)' is missing or not a positive integer")
            }
            return n
        }
        func optionalInt(_ key: String) -> Int? { (json[key] as? NSNumber)?.intValue }
        func double(_ key: String) -> Double? { (json[key] as? NSNumber)?.doubleValue }

        let names = (json["architectures"] as? [String]) ?? []
        guard let architecture = names.lazy.compactMap(Architecture.init(rawValue:)).first else {
            let supported = [Architecture.llama, .mistral, .qwen2].map(\.rawValue).joined(separator: ", ")
            throw LoomError.unsupported("\(path): architectures \(names) are not supported (supported: \(supported))")
        }
        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        let kvHeads = optionalInt("num_key_value_heads") ?? heads
        guard kvHeads > 0, heads % kvHeads == 0 else {
            throw LoomError.invalidFile(path: path, reason: "num_attention_heads \(heads) is not a multiple of num_key_value_heads \(kvHeads)")
        }
        let headDim = optionalInt("head_dim") ?? hidden / heads
        guard headDim > 0, headDim % 2 == 0 else {
            throw LoomError.invalidFile(path: path, reason: "head_dim \(headDim) must be a positive even number")
        }
        if let act = json["hidden_act"] as? String, act != "silu" {
            throw LoomError.unsupported("\(path): hidden_act '\(act)' is not supported (silu only)")
        }
        if json["mlp_bias"] as? Bool == true {
            throw LoomError.unsupported("\(path): mlp_bias is not supported")
        }

        // transformers 5 writes `rope_parameters`; earlier versions `rope_theta` + `rope_scaling`.
        let ropeParameters = json["rope_parameters"] as? [String: Any]
        let ropeTheta = (ropeParameters?["rope_theta"] as? NSNumber)?.doubleValue ?? double("rope_theta") ?? 10000
        var scaling: Llama3RopeScaling?
        if let s = (json["rope_scaling"] as? [String: Any]) ?? ropeParameters {
            let type = (s["rope_type"] as? String) ?? (s["type"] as? String) ?? "default"
            switch type {
            case "default":
                break
            case "llama3":
                func num(_ k: String) throws -> Double {
                    guard let v = (s[k] as? NSNumber)?.doubleValue else {
                        throw LoomError.invalidFile(path: path, reason: "rope_scaling of type llama3 lacks '\(k)'")
                    }
                    return v
                }
                scaling = Llama3RopeScaling(
                    factor: try num("factor"), lowFreqFactor: try num("low_freq_factor"),
                    highFreqFactor: try num("high_freq_factor"),
                    originalMaxPositionEmbeddings: Int(try num("original_max_position_embeddings")))
            default:
                throw LoomError.unsupported("\(path): rope_scaling type '\(type)' is not supported (llama3 only)")
            }
        }
        let dtypeName = (json["torch_dtype"] as? String) ?? (json["dtype"] as? String) ?? "float32"
        let dtype: DType = switch dtypeName {
        case "bfloat16": .bf16
        case "float16": .f16
        default: .f32
        }
        let bias = architecture == .qwen2 ? true : (json["attention_bias"] as? Bool ?? false)
        var maxPositions = optionalInt("max_position_embeddings") ?? 2048
        if let window = optionalInt("sliding_window"), window > 0, architecture == .mistral {
            // Loom has no sliding-window attention: contexts stay within the window, where it is exact.
            maxPositions = min(maxPositions, window)
        }
        return ModelConfig(
            architecture: architecture,
            vocabSize: try int("vocab_size"),
            hiddenSize: hidden,
            intermediateSize: try int("intermediate_size"),
            numLayers: try int("num_hidden_layers"),
            numHeads: heads,
            numKVHeads: kvHeads,
            headDim: headDim,
            ropeTheta: ropeTheta,
            ropeScaling: scaling,
            rmsNormEps: Float(double("rms_norm_eps") ?? 1e-6),
            tieWordEmbeddings: json["tie_word_embeddings"] as? Bool ?? false,
            maxPositionEmbeddings: maxPositions,
            hasQKVBias: bias,
            bosTokenId: optionalInt("bos_token_id"),
            eosTokenIds: intList(json["eos_token_id"]),
            weightDType: dtype
        )
    }

    static func intList(_ value: Any?) -> [Int] {
        if let n = value as? NSNumber { return [n.intValue] }
        if let list = value as? [Any] { return list.compactMap { ($0 as? NSNumber)?.intValue } }
        return []
    }
}
