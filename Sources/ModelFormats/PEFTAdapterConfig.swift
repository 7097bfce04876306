import Foundation
import LoomCore

/// `adapter_config.json` of a PEFT LoRA adapter, with the options Loom honours and the ones it refuses.
public struct PEFTAdapterConfig: Sendable {
    public var rank: Int
    public var alpha: Float
    public var useRSLoRA: Bool
    /// Module-name patterns → rank / alpha, in file order (PEFT takes the first pattern that matches).
    public var rankPattern: [(String, Int)]
    public var alphaPattern: [(String, Float)]
    /// The modules the config names (`all-linear` expands to all seven).
    public var targetModules: Set<TargetModule>
    public var layersToTransform: [Int]?
    /// Accepted as PEFT does: for `nn.Linear` layers PEFT itself turns it off, so it changes nothing.
    public var fanInFanOut: Bool
    public var baseModelNameOrPath: String?

    public static func load(directory: String) throws -> PEFTAdapterConfig {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw LoomError.fileNotFound(path: directory)
        }
        guard isDirectory.boolValue else {
            throw LoomError.invalidArgument("\(directory) is a file; an adapter is a folder with adapter_config.json and adapter_model.safetensors")
        }
        let path = (directory as NSString).appendingPathComponent("adapter_config.json")
        guard let data = FileManager.default.contents(atPath: path) else { throw LoomError.fileNotFound(path: path) }
        return try parse(data, path: path)
    }

    public static func parse(_ data: Data, path: String) throws -> PEFTAdapterConfig {
        guard let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),
              let json = object as? [String: Any]
        else {
            throw LoomError.invalidFile(path: path, reason: "not a JSON object")
        }
        let peftType = (json["peft_type"] as? String) ?? "LORA"
        guard peftType == "LORA" else {
            throw LoomError.unsupported("\(path): peft_type \(peftType) is not supported (LORA only)")
        }
        if json["use_dora"] as? Bool == true {
            throw LoomError.unsupported("\(path): DoRA adapters (use_dora) are not supported")
        }
        let bias = (json["bias"] as? String) ?? "none"
        guard bias == "none" else {
            throw LoomError.unsupported("\(path): bias \"\(bias)\" is not supported (bias must be \"none\")")
        }
        if json["lora_bias"] as? Bool == true {
            throw LoomError.unsupported("\(path): lora_bias is not supported (bias must be \"none\")")
        }
        if let modules = json["modules_to_save"] as? [String], !modules.isEmpty {
            throw LoomError.unsupported("\(path): modules_to_save \(modules) is not supported (adapters that add tokens or train whole modules)")
        }
        if let tokens = json["trainable_token_indices"], !(tokens is NSNull) {
            throw LoomError.unsupported("\(path): adapters that add tokens (trainable_token_indices) are not supported")
        }
        guard let rank = (json["r"] as? NSNumber)?.intValue, rank > 0 else {
            throw LoomError.invalidFile(path: path, reason: "'r' is missing or not a positive integer")
        }
        let alpha = (json["lora_alpha"] as? NSNumber)?.floatValue ?? Float(rank)
        var targets = Set<TargetModule>()
        switch json["target_modules"] {
        case let list as [String]:
            targets = try TargetModule.parse(list)
        case let name as String:
            if name == "all-linear" || name == "all" {
                targets = Set(TargetModule.allCases)
            } else {
                // PEFT treats a string as a regex matched against full module names.
                let regex = try? NSRegularExpression(pattern: "^(?:\(name))$")
                for m in TargetModule.allCases {
                    let full = "model.layers.0.\(m.parent).\(m.rawValue)"
                    if regex?.firstMatch(in: full, range: NSRange(full.startIndex..., in: full)) != nil { targets.insert(m) }
                }
            }
        default:
            throw LoomError.invalidFile(path: path, reason: "'target_modules' is missing")
        }
        var layers: [Int]?
        if let n = json["layers_to_transform"] as? NSNumber { layers = [n.intValue] }
        if let list = json["layers_to_transform"] as? [Any] { layers = list.compactMap { ($0 as? NSNumber)?.intValue } }
        return PEFTAdapterConfig(
            rank: rank, alpha: alpha, useRSLoRA: json["use_rslora"] as? Bool ?? false,
            rankPattern: orderedPattern(data, key: "rank_pattern").compactMap { k, v in (v as? NSNumber).map { (k, $0.intValue) } },
            alphaPattern: orderedPattern(data, key: "alpha_pattern").compactMap { k, v in (v as? NSNumber).map { (k, $0.floatValue) } },
            targetModules: targets, layersToTransform: layers,
            fanInFanOut: json["fan_in_fan_out"] as? Bool ?? false,
            baseModelNameOrPath: json["base_model_name_or_path"] as? String)
    }

    /// The rank of the module named `name` (`model.layers.3.self_attn.q_proj`).
    public func rank(for name: String) -> Int {
        Self.firstMatch(rankPattern, name) ?? rank
    }

    public func alpha(for name: String) -> Float {
        Self.firstMatch(alphaPattern, name) ?? alpha
    }

    /// PEFT's `get_pattern_key`: a key matches a module name that ends with it after a dot (or equals it);
    /// keys are regular expressions.
    static func firstMatch<T>(_ pattern: [(String, T)], _ name: String) -> T? {
        for (key, value) in pattern {
            guard let regex = try? NSRegularExpression(pattern: "^(?:.*\\.)?(?:\(key))$") else { continue }
            if regex.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil { return value }
        }
        return nil
    }

    /// A JSON object's entries in file order (JSONSerialization loses order; PEFT keeps it).
    static func orderedPattern(_ data: Data, key: String) -> [(String, Any)] {
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let dict = json[key] as? [String: Any], !dict.isEmpty
        else { return [] }
        let text = String(decoding: data, as: UTF8.self)
        func position(_ k: String) -> Int {
            guard let keyRange = text.range(of: "\"\(key)\"") else { return 0 }
            let escaped = String(data: try! JSONSerialization.data(withJSONObject: [k], options: [.withoutEscapingSlashes]), encoding: .utf8)!.dropFirst().dropLast()
            return text.range(of: String(escaped), range: keyRange.upperBound..<text.endIndex).map { text.distance(from: text.startIndex, to: $0.lowerBound) } ?? Int.max
        }
        return dict.map { ($0.key, $0.value) }.sorted { position($0.0) < position($1.0) }
    }
}
