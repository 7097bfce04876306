import Foundation
import LoomCore
import ModelFormats
import Models

/// How LoRA kernels group a batch's tokens (`--lora-backend`).
public enum LoRABackendKind: String, Sendable, CaseIterable {
    /// One segment per slot (SGLang's `triton` backend).
    case sgmv
    /// Segments of at most `--max-lora-chunk-size` tokens (SGLang's default).
    case csgmv
    /// Loom's own: expand folded into the base GEMM. Each targeted weight is widened by the slots'
    /// B (`[out, in + slots·stack·rank]`) and the shrink writes the scaled `x·Aᵀ` of each row beside
    /// `x`, so one GEMM adds base and delta; shrink segments are chunked as in `csgmv`. Groups
    /// whose input width is not a multiple of 8, and row-parallel groups under tensor parallelism,
    /// keep csgmv's shrink and expand. Steps of at most `LoRAOptions.fusedDecodeRows` rows without
    /// tensor parallelism (decode) run no LoRA kernel at all: the weight also carries the slots' A
    /// below its rows, so the GEMM's output holds every slot's `x·Aᵀ` beside the base columns, and
    /// the op reading that output (RoPE, SiLU·mul, the next RMSNorm) adds the row's delta.
    case fused

    /// Accepts SGLang's names, `triton` being an alias of `sgmv`.
    public init(flag: String) throws {
        switch flag {
        case "sgmv", "triton": self = .sgmv
        case "csgmv": self = .csgmv
        case "fused": self = .fused
        default: throw LoomError.invalidArgument("--lora-backend \(flag) is not supported (csgmv, sgmv, triton, fused)")
        }
    }
}

/// Which unpinned adapter leaves a full slot pool (`--lora-eviction-policy`).
public enum EvictionPolicy: String, Sendable, CaseIterable {
    case lru, fifo
}

/// The LoRA flags of `loom serve` / `loom generate`, with SGLang's names and defaults.
public struct LoRAOptions: Sendable {
    public var maxLorasPerBatch = 8
    public var maxLoadedLoras: Int?
    public var maxLoraRank: Int?
    public var targetModules: Set<TargetModule>?
    public var backend = LoRABackendKind.csgmv
    public var maxChunkSize = 16
    public var evictionPolicy = EvictionPolicy.lru
    /// `fused`: the most rows of a step whose groups shrink inside the GEMM and expand in the op
    /// that reads its output; larger steps (prefill) use the widened K. 0: never (tests run both).
    /// On the H200 with 8 rank-16 slots the consumers win up to 128 rows (96: 25.1 against 40.6 µs a
    /// layer) and tie at 256 (`loom bench lora-kernels`, session 16).
    public var fusedDecodeRows = 128
    /// `fused`: the largest pool rank (`--max-lora-rank`, or the largest adapter's) whose decode steps
    /// expand in the ops reading the GEMMs; above it they take the widened K too. Those ops read each
    /// row's slot B themselves, rows of one slot again from L2, which past rank 16 costs more than the
    /// widened GEMM (`loom bench lora-kernels`). At most `LoRAManager.maxConsumerRank`.
    public var fusedConsumerMaxRank = 16
    /// `fused`: the groups (`qkv`, `o`, `gateUp`, `down`) whose decode steps expand in the ops
    /// reading their GEMMs; the others take the widened K in those steps too. nil: every fused group.
    /// `LOOM_FUSED_DECODE_GROUPS` (e.g. `qkv+gateUp`) sets it, for A/B runs on a device.
    public var fusedConsumerGroups: Set<ProjectionGroup>? = ProcessInfo.processInfo.environment["LOOM_FUSED_DECODE_GROUPS"].map { names in
        Set(ProjectionGroup.allCases.filter { names.split(separator: "+").contains(Substring("\($0)")) })
    }
    /// `fused`: gate/up's widened K as two extensions of `slots · R` columns, one per module, each in
    /// its own copy of the GEMM input, and the GEMM as a batch of its two halves (`linearStacked`),
    /// rather than one extension of `slots · 2 · R` columns half of whose weight is zeros.
    /// nil (the default): split when the pool's rank R is at least `fusedSplitMinRank`.
    /// `LOOM_FUSED_SPLIT_STACKS=1` or `0` sets it, for A/B runs on a device.
    public var fusedSplitStacks: Bool? = ProcessInfo.processInfo.environment["LOOM_FUSED_SPLIT_STACKS"].map { $0 == "1" }
    /// The smallest pool rank whose gate/up take split extensions by default. On the H200 with 8
    /// slots (`loom bench lora-kernels`, session 21, split / shared in turn, µs a layer): rank 64
    /// decode 50.9, 51.0 / 54.0, 53.9 at 32 tokens, 65.9, 66.9 / 71.7, 73.3 at 256, batch-32
    /// decode 4,951, 4,957 / 4,857, 4,881 tok/s; rank 32 at 256 tokens 44.1, 45.4 / 48.4, 46.4, at 32
    /// 33.6, 33.7 / 33.0, 33.2; but rank 16 prefill 108.3, 110.1 / 93.9, 95.2 (x copied into the
    /// second copy of 2,048 rows).
    public static let fusedSplitMinRank = 32

    public init() {}

    public func validate() throws {
        guard maxLorasPerBatch >= 1 else { throw LoomError.invalidArgument("--max-loras-per-batch must be at least 1") }
        if let loaded = maxLoadedLoras, loaded < maxLorasPerBatch {
            throw LoomError.invalidArgument("--max-loaded-loras (\(loaded)) must be at least --max-loras-per-batch (\(maxLorasPerBatch))")
        }
        if let rank = maxLoraRank, rank < 1 { throw LoomError.invalidArgument("--max-lora-rank must be at least 1") }
        if fusedDecodeRows < 0 || fusedConsumerMaxRank < 0 {
            throw LoomError.invalidArgument("the fused decode rows and consumer rank must be at least 0")
        }
        guard [16, 32, 64, 128].contains(maxChunkSize) || (maxChunkSize >= 1 && maxChunkSize <= 128) else {
            throw LoomError.invalidArgument("--max-lora-chunk-size must be between 1 and 128")
        }
    }
}

/// One `--lora-paths` entry in any of SGLang's three forms: `PATH`, `NAME=PATH`, or JSON
/// `{"lora_name": ..., "lora_path": ..., "pinned": ...}`.
public struct LoRAPathSpec: Sendable, Equatable {
    public var name: String
    public var path: String
    public var pinned: Bool

    public init(name: String, path: String, pinned: Bool = false) {
        self.name = name
        self.path = path
        self.pinned = pinned
    }

    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("{") {
            guard let json = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any],
                  let name = json["lora_name"] as? String, let path = json["lora_path"] as? String
            else {
                throw LoomError.invalidArgument("--lora-paths entry \(text) is not JSON with string lora_name and lora_path")
            }
            self.init(name: name, path: path, pinned: json["pinned"] as? Bool ?? false)
        } else if let eq = trimmed.firstIndex(of: "=") {
            self.init(name: String(trimmed[..<eq]), path: String(trimmed[trimmed.index(after: eq)...]))
        } else {
            self.init(name: trimmed, path: trimmed)
        }
        guard !name.isEmpty, !path.isEmpty else { throw LoomError.invalidArgument("--lora-paths entry '\(text)' has an empty name or path") }
    }
}
