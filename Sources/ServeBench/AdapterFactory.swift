import Foundation
import LoomCore
import ModelFormats

/// `loom bench make-adapters`: PEFT LoRA adapters with random weights for a base shape, so a
/// benchmark can register hundreds or thousands of adapters without downloads.
///
/// Adapter i is `adapter-i`, of rank `ranks[i % ranks.count]`, with `lora_alpha = alphaScale · r`
/// (scaling `alphaScale`). A is Kaiming-uniform as PEFT draws it, `U(±1/√in)`; B, which PEFT
/// starts at zero, is `U(±1/√r)` so that the delta is not zero and kernels see real values.
public struct AdapterFactory: Sendable {
    public var base: ModelConfig
    /// What `adapter_config.json` records as `base_model_name_or_path`.
    public var baseName: String
    public var count: Int
    public var ranks: [Int]
    public var alphaScale: Double
    public var targetModules: [TargetModule]
    public var dtype: DType
    public var seed: UInt64
    public var outputDirectory: String
    public var namePrefix = "adapter-"
    /// Write only this many weight files; adapter i beyond them hard-links the weights of adapter
    /// `i mod distinctWeights` (same rank, as it is a multiple of the rank count). A server still
    /// loads every adapter on its own; the disk holds only the distinct ones.
    public var distinctWeights: Int?

    public init(base: ModelConfig, baseName: String, count: Int, ranks: [Int], alphaScale: Double,
                targetModules: Set<TargetModule>, dtype: DType, seed: UInt64, outputDirectory: String) throws {
        guard count >= 1 else { throw LoomError.invalidArgument("--count must be at least 1") }
        guard !ranks.isEmpty, ranks.allSatisfy({ $0 >= 1 }) else { throw LoomError.invalidArgument("--ranks must list positive ranks") }
        guard alphaScale > 0, alphaScale.isFinite else { throw LoomError.invalidArgument("--alpha-scale must be positive") }
        guard !targetModules.isEmpty else { throw LoomError.invalidArgument("--target-modules names no module") }
        guard [.bf16, .f16, .f32].contains(dtype) else { throw LoomError.invalidArgument("--dtype must be bf16, f16 or f32") }
        self.base = base
        self.baseName = baseName
        self.count = count
        self.ranks = ranks
        self.alphaScale = alphaScale
        self.targetModules = targetModules.sorted()
        self.dtype = dtype
        self.seed = seed
        self.outputDirectory = outputDirectory
    }

    public struct Written: Sendable, Equatable {
        public var name: String
        public var path: String
        public var rank: Int
        public var bytes: Int
    }

    public func name(_ i: Int) -> String { namePrefix + String(i) }
    public func rank(_ i: Int) -> Int { ranks[i % ranks.count] }

    /// Writes every adapter (in parallel) and `adapters.json`, a manifest of names, paths and ranks.
    public func writeAll(progress: (@Sendable (Int) -> Void)? = nil) throws -> [Written] {
        try FileManager.default.createDirectory(atPath: outputDirectory, withIntermediateDirectories: true)
        final class Collector: @unchecked Sendable {
            let lock = NSLock()
            var written: [Written?]
            var firstError: Error?
            var done = 0
            init(_ n: Int) { written = Array(repeating: nil, count: n) }
        }
        if let d = distinctWeights, d < 1 || d % ranks.count != 0 {
            throw LoomError.invalidArgument("--distinct-weights must be a positive multiple of the number of ranks (\(ranks.count))")
        }
        let c = Collector(count)
        let distinct = min(distinctWeights ?? count, count)
        let work = { (i: Int) in
            do {
                let w = i < distinct ? try write(i) : try link(i, to: i % distinct)
                c.lock.lock()
                c.written[i] = w
                c.done += 1
                let done = c.done
                c.lock.unlock()
                progress?(done)
            } catch {
                c.lock.lock()
                if c.firstError == nil { c.firstError = error }
                c.lock.unlock()
            }
        }
        DispatchQueue.concurrentPerform(iterations: distinct, execute: work)
        if distinct < count { DispatchQueue.concurrentPerform(iterations: count - distinct) { work(distinct + $0) } }
        if let e = c.firstError { throw e }
        let all = c.written.map { $0! }
        let manifest: [String: Any] = [
            "base_model_name_or_path": baseName,
            "adapters": all.map { ["name": $0.name, "path": $0.path, "rank": $0.rank] as [String: Any] },
        ]
        let data = try JSONSerialization.data(withJSONObject: manifest, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try data.write(to: URL(fileURLWithPath: (outputDirectory as NSString).appendingPathComponent("adapters.json")))
        return all
    }

    /// Writes adapter `i`: `adapter_config.json` and `adapter_model.safetensors`.
    public func write(_ i: Int) throws -> Written {
        let r = rank(i)
        let dir = (outputDirectory as NSString).appendingPathComponent(name(i))
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try configJSON(rank: r).write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("adapter_config.json")))

        var writer = SafetensorsWriter()
        var bounds: [Float] = []
        for layer in 0..<base.numLayers {
            for m in targetModules {
                let (out, inFeatures) = m.shape(base)
                let prefix = "base_model.model.model.layers.\(layer).\(m.parent).\(m.rawValue)"
                writer.entries.append(.init(name: "\(prefix).lora_A.weight", shape: [r, inFeatures], dtype: dtype))
                bounds.append(1 / Float(inFeatures).squareRoot())
                writer.entries.append(.init(name: "\(prefix).lora_B.weight", shape: [out, r], dtype: dtype))
                bounds.append(1 / Float(r).squareRoot())
            }
        }
        var rng = SeededGenerator(seed: seed &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15)
        let path = (dir as NSString).appendingPathComponent("adapter_model.safetensors")
        try writer.write(to: path) { t, buffer in
            Self.fillUniform(buffer, bound: bounds[t], dtype: dtype, rng: &rng)
        }
        let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
        return Written(name: name(i), path: dir, rank: r, bytes: size)
    }

    /// Writes adapter `i` with its own config and the weights of adapter `j` (hard link, else a copy).
    func link(_ i: Int, to j: Int) throws -> Written {
        precondition(rank(i) == rank(j), "adapter \(i) would share the weights of a different rank")
        let dir = (outputDirectory as NSString).appendingPathComponent(name(i))
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try configJSON(rank: rank(i)).write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent("adapter_config.json")))
        let source = (outputDirectory as NSString).appendingPathComponent(name(j) + "/adapter_model.safetensors")
        let target = (dir as NSString).appendingPathComponent("adapter_model.safetensors")
        try? FileManager.default.removeItem(atPath: target)
        do {
            try FileManager.default.linkItem(atPath: source, toPath: target)
        } catch {
            try FileManager.default.copyItem(atPath: source, toPath: target)
        }
        return Written(name: name(i), path: dir, rank: rank(i), bytes: 0)
    }

    /// PEFT's `adapter_config.json` for a plain LoRA of rank `r`.
    func configJSON(rank r: Int) throws -> Data {
        let alpha = alphaScale * Double(r)
        let config: [String: Any] = [
            "alpha_pattern": [String: Any](), "auto_mapping": NSNull(), "base_model_name_or_path": baseName,
            "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": false,
            "layer_replication": NSNull(), "layers_pattern": NSNull(), "layers_to_transform": NSNull(),
            "loftq_config": [String: Any](), "lora_alpha": alpha == alpha.rounded() ? Int(alpha) as Any : alpha,
            "lora_bias": false, "lora_dropout": 0.0, "megatron_config": NSNull(), "megatron_core": "megatron.core",
            "modules_to_save": NSNull(), "peft_type": "LORA", "r": r, "rank_pattern": [String: Any](),
            "revision": NSNull(), "target_modules": targetModules.map(\.rawValue), "task_type": "CAUSAL_LM",
            "use_dora": false, "use_rslora": false,
        ]
        return try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    }

    /// Uniform values in `[-bound, bound)`, four per 64 random bits.
    static func fillUniform(_ buffer: UnsafeMutableRawBufferPointer, bound: Float, dtype: DType, rng: inout SeededGenerator) {
        let scale = 2 * bound / 65536
        switch dtype {
        case .bf16, .f16:
            let out = buffer.bindMemory(to: UInt16.self)
            var i = 0
            while i < out.count {
                var bits = rng.next()
                for _ in 0..<4 where i < out.count {
                    let v = Float(UInt16(truncatingIfNeeded: bits)) * scale - bound
                    out[i] = dtype == .bf16 ? HalfConversion.floatToBF16(v) : HalfConversion.floatToF16(v)
                    bits >>= 16
                    i += 1
                }
            }
        default:
            let out = buffer.bindMemory(to: Float.self)
            for i in 0..<out.count { out[i] = Float(rng.nextUnit()) * 2 * bound - bound }
        }
    }
}
