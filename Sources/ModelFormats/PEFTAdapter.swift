import Foundation
import LoomCore

/// The seven projections of a Llama-family layer that LoRA may target, in stacking order.
public enum TargetModule: String, CaseIterable, Sendable, Comparable {
    case q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj"
    case gate = "gate_proj", up = "up_proj", down = "down_proj"

    public static func < (a: TargetModule, b: TargetModule) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// `self_attn` or `mlp`.
    public var parent: String { [.gate, .up, .down].contains(self) ? "mlp" : "self_attn" }

    /// `[out, in]` of the base weight.
    public func shape(_ c: ModelConfig) -> (out: Int, in: Int) {
        switch self {
        case .q: (c.qSize, c.hiddenSize)
        case .k, .v: (c.kvSize, c.hiddenSize)
        case .o: (c.hiddenSize, c.qSize)
        case .gate, .up: (c.intermediateSize, c.hiddenSize)
        case .down: (c.hiddenSize, c.intermediateSize)
        }
    }

    /// Parses the names that PEFT configs and SGLang's `--lora-target-modules` use: the seven
    /// projection names, SGLang's stacked names `qkv_proj` / `gate_up_proj`, and `all` / `all-linear`.
    public static func parse(_ names: [String]) throws -> Set<TargetModule> {
        var result = Set<TargetModule>()
        for name in names {
            switch name {
            case "all", "all-linear": result.formUnion(allCases)
            case "qkv_proj": result.formUnion([.q, .k, .v])
            case "gate_up_proj": result.formUnion([.gate, .up])
            default:
                guard let m = TargetModule(rawValue: name) else {
                    throw LoomError.unsupported(
                        "target module '\(name)' is not supported (supported: \(allCases.map(\.rawValue).joined(separator: ", ")), qkv_proj, gate_up_proj, all)")
                }
                result.insert(m)
            }
        }
        return result
    }
}

/// One adapted projection of one layer: `delta(x) = scaling · B (A x)`.
public struct LoRAModuleWeights: Sendable {
    public var rank: Int
    public var scaling: Float
    /// `[rank, in]`, row-major.
    public var a: [Float]
    /// `[out, rank]`, row-major.
    public var b: [Float]
}

/// A PEFT LoRA adapter read from `adapter_config.json` + `adapter_model.safetensors`, checked
/// against the base model and normalised: per-module ranks and scalings resolved from `r`,
/// `lora_alpha`, `use_rslora`, `rank_pattern` and `alpha_pattern`.
public struct PEFTAdapter: Sendable {
    public var path: String
    public var config: PEFTAdapterConfig
    /// `layers[layer][module]`; absent modules are not adapted in that layer.
    public var layers: [[TargetModule: LoRAModuleWeights]]

    /// The largest rank of any module.
    public var maxRank: Int { layers.flatMap(\.values).map(\.rank).max() ?? 0 }
    /// Every module adapted in some layer.
    public var targetModules: Set<TargetModule> { Set(layers.flatMap(\.keys)) }
    /// Bytes of the weights in `f32`.
    public var byteCount: Int { layers.flatMap(\.values).reduce(0) { $0 + 4 * ($1.a.count + $1.b.count) } }

    /// Reads and checks the adapter folder; every refusal names the file and the reason.
    public static func load(path: String, base c: ModelConfig) throws -> PEFTAdapter {
        let config = try PEFTAdapterConfig.load(directory: path)
        let weightsPath = (path as NSString).appendingPathComponent("adapter_model.safetensors")
        if !FileManager.default.fileExists(atPath: weightsPath) {
            let bin = (path as NSString).appendingPathComponent("adapter_model.bin")
            if FileManager.default.fileExists(atPath: bin) {
                throw LoomError.unsupported("\(bin): PyTorch .bin adapters are not supported; save the adapter with safetensors (save_pretrained(..., safe_serialization=True))")
            }
            throw LoomError.fileNotFound(path: weightsPath)
        }
        let file = try SafetensorsFile(path: weightsPath)
        var layers = [[TargetModule: LoRAModuleWeights]](repeating: [:], count: c.numLayers)
        var seenA = Set<String>()
        for name in file.tensors.keys.sorted() {
            let key = try TensorKey(name, path: weightsPath)
            switch key.kind {
            case .addedTokens:
                throw LoomError.unsupported("\(weightsPath): tensor '\(name)': adapters that add tokens or train embed_tokens / lm_head are not supported")
            case .loraB:
                continue
            case .loraA:
                break
            }
            guard key.layer < c.numLayers else {
                throw LoomError.invalidFile(path: weightsPath, reason: "tensor '\(name)' is for layer \(key.layer) but the base model has \(c.numLayers) layers")
            }
            if let only = config.layersToTransform, !only.contains(key.layer) {
                throw LoomError.invalidFile(path: weightsPath, reason: "tensor '\(name)' is for layer \(key.layer), outside layers_to_transform \(only)")
            }
            let bName = name.replacingOccurrences(of: "lora_A", with: "lora_B")
            guard let aInfo = file.tensors[name] else { continue }
            guard let bInfo = file.tensors[bName] else { throw LoomError.missingTensor(path: weightsPath, tensor: bName) }
            let (out, inFeatures) = key.module.shape(c)
            let rank = aInfo.shape.first ?? 0
            guard aInfo.shape == [rank, inFeatures], rank > 0 else {
                throw LoomError.shapeMismatch(path: weightsPath, tensor: name, expected: [max(rank, 1), inFeatures], actual: aInfo.shape)
            }
            guard bInfo.shape == [out, rank] else {
                throw LoomError.shapeMismatch(path: weightsPath, tensor: bName, expected: [out, rank], actual: bInfo.shape)
            }
            let moduleName = "model.layers.\(key.layer).\(key.module.parent).\(key.module.rawValue)"
            let declaredRank = config.rank(for: moduleName)
            guard declaredRank == rank else {
                throw LoomError.invalidFile(path: weightsPath, reason: "tensor '\(name)' has rank \(rank) but adapter_config.json gives \(moduleName) rank \(declaredRank)")
            }
            let alpha = config.alpha(for: moduleName)
            let scaling = config.useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank)
            layers[key.layer][key.module] = LoRAModuleWeights(rank: rank, scaling: scaling, a: try file.floats(name), b: try file.floats(bName))
            seenA.insert(bName)
        }
        for name in file.tensors.keys where name.contains("lora_B") && !seenA.contains(name) {
            throw LoomError.missingTensor(path: weightsPath, tensor: name.replacingOccurrences(of: "lora_B", with: "lora_A"))
        }
        let adapter = PEFTAdapter(path: path, config: config, layers: layers)
        guard adapter.maxRank > 0 else {
            throw LoomError.invalidFile(path: weightsPath, reason: "no LoRA tensors (lora_A / lora_B) found")
        }
        return adapter
    }
}

/// What one tensor name of a PEFT file refers to.
struct TensorKey {
    enum Kind { case loraA, loraB, addedTokens }
    var kind: Kind
    var layer: Int
    var module: TargetModule

    /// Parses names like `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`
    /// (an adapter name such as `.default` may follow `lora_A`).
    init(_ name: String, path: String) throws {
        let parts = name.split(separator: ".").map(String.init)
        if parts.contains(where: { ["embed_tokens", "lm_head", "lora_embedding_A", "lora_embedding_B", "trainable_tokens_delta"].contains($0) }) {
            kind = .addedTokens; layer = 0; module = .q
            return
        }
        guard let kindIndex = parts.firstIndex(where: { $0 == "lora_A" || $0 == "lora_B" }) else {
            if parts.last == "bias" {
                throw LoomError.unsupported("\(path): tensor '\(name)': LoRA bias is not supported (bias must be \"none\")")
            }
            if parts.contains(where: { $0.hasPrefix("lora_magnitude") }) {
                throw LoomError.unsupported("\(path): tensor '\(name)': DoRA adapters are not supported")
            }
            throw LoomError.invalidFile(path: path, reason: "tensor '\(name)' is not a LoRA weight (lora_A / lora_B)")
        }
        guard kindIndex >= 1, let module = TargetModule(rawValue: parts[kindIndex - 1]) else {
            throw LoomError.unsupported("\(path): tensor '\(name)' targets a module that is not supported (q/k/v/o/gate/up/down projections only)")
        }
        guard let layersIndex = parts.firstIndex(of: "layers"), layersIndex + 1 < parts.count, let layer = Int(parts[layersIndex + 1]) else {
            throw LoomError.invalidFile(path: path, reason: "tensor '\(name)' names no layer index")
        }
        kind = parts[kindIndex] == "lora_A" ? .loraA : .loraB
        self.layer = layer
        self.module = module
    }
}
