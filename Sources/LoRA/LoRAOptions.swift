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
    /// its own copy of the GEMM input (the norm writes x into both), and the GEMM as a batch of its
    /// two halves (`linearStacked`), rather than one extension of `slots · 2 · R` columns half of
    /// whose weight is zeros. On the H200 with 8 slots (`loom bench lora-kernels`, session 21, split /
    /// shared in turn, µs a layer) it wins or ties on every row: rank 64 decode 47.6, 47.4 / 53.6,
    /// 53.4 at 32 tokens and 63.0, 64.2 / 71.4, 69.5 at 256, prefill 163.5, 179.0 / 207.2, 197.8;
    /// rank 32 at 32 tokens 34.2, 34.2 / 35.7, 35.5; rank 16 at 256 tokens 33.7, 32.6 / 33.1, 34.2,
    /// prefill 87.4, 86.7 / 92.8, 89.2; batch-32 decode with 8 rank-64 adapters 5,075 / 4,850 tok/s.
    /// `LOOM_FUSED_SPLIT_STACKS=0` turns it off, for A/B runs on a device.
    public var fusedSplitStacks = ProcessInfo.processInfo.environment["LOOM_FUSED_SPLIT_STACKS"] != "0"
    /// `fused`, steps that no graph replays: the rows of x each instance of a batched shrink takes
    /// (`LoRABatchedShrink`, on a backend that runs them); where a run of one adapter's rows is
    /// shorter, the step keeps the other forms. `LOOM_BATCHED_SHRINK_ROWS` sets it, for checks on
    /// short prompts (`gpu-check`'s are 12 to 128 tokens).
    public var batchedShrinkRows = ProcessInfo.processInfo.environment["LOOM_BATCHED_SHRINK_ROWS"].flatMap { Int($0) }.map { max(1, $0) } ?? 64

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
