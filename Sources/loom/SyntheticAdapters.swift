import Foundation
import LoomCore
import LoRA
import ModelFormats
import ServeBench

/// Random-weight PEFT adapters for the LoRA benchmarks: `adapter-0 …`, one rank, every projection
/// (q, k, v, o, gate, up, down), bf16, written by the generator of `loom bench make-adapters`.
struct SyntheticAdapters {
    /// The folder they are in (a fresh temporary one); `remove()` deletes it.
    let directory: String
    let specs: [LoRAPathSpec]

    /// The seven projections, stacked as the slot pool stacks them.
    static let modules = Set(TargetModule.allCases)

    /// Writes `count` adapters of rank `rank` for `base` (its `numLayers` layers). Past 16 adapters
    /// only 16 weight files are written and the others hard-link them: each adapter still gets
    /// its own slot, so the kernels read as many distinct bytes, and the disk holds less.
    static func write(base: ModelConfig, baseName: String, count: Int, rank: Int, seed: UInt64 = 0) throws -> SyntheticAdapters {
        let directory = (NSTemporaryDirectory() as NSString).appendingPathComponent("loom-bench-adapters-\(UUID().uuidString)")
        var factory = try AdapterFactory(
            base: base, baseName: baseName, count: count, ranks: [rank], alphaScale: 1, targetModules: modules,
            dtype: .bf16, seed: seed, outputDirectory: directory)
        factory.distinctWeights = count > 16 ? 16 : nil
        let written = try factory.writeAll()
        return SyntheticAdapters(directory: directory, specs: written.map { LoRAPathSpec(name: $0.name, path: $0.path) })
    }

    /// A slot pool for these adapters: `slots` slots and as many in host memory, rank `rank`, every
    /// projection, `--lora-backend` and `--max-lora-chunk-size` as given.
    static func poolOptions(slots: Int, rank: Int, backend: String, chunkSize: Int) throws -> LoRAOptions {
        var o = LoRAOptions()
        o.maxLorasPerBatch = slots
        o.maxLoadedLoras = slots
        o.maxLoraRank = rank
        o.targetModules = modules
        o.backend = try LoRABackendKind(flag: backend)
        o.maxChunkSize = chunkSize
        try o.validate()
        return o
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Bytes of one adapter's A and B in bf16 over every layer of `c` (a tensor-parallel rank's
    /// local config gives that rank's share: A's local columns for o/down, B's local rows for the others).
    static func bytesPerAdapter(_ c: ModelConfig, rank: Int) -> Int {
        var elements = 0
        for m in TargetModule.allCases {
            let (out, inFeatures) = m.shape(c)
            elements += rank * (inFeatures + out)
        }
        return 2 * elements * c.numLayers
    }
}
