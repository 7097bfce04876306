import ArgumentParser
import LoomCore
import LoRA
import ModelFormats

/// SGLang's LoRA server flags, shared by `loom serve` and `loom generate`.
struct LoRAFlags: ParsableArguments {
    @Option(parsing: .upToNextOption, help: "Adapters to load at start: PATH, NAME=PATH, or JSON {\"lora_name\",\"lora_path\",\"pinned\"}.")
    var loraPaths: [String] = []

    @Option(help: "Most distinct adapters in one batch (the base model counts as one).")
    var maxLorasPerBatch = 8

    @Option(help: "Most adapters whose weights stay in host memory (at least --max-loras-per-batch).")
    var maxLoadedLoras: Int?

    @Option(help: "The largest adapter rank the slot pool holds (default: inferred from --lora-paths).")
    var maxLoraRank: Int?

    @Option(parsing: .upToNextOption, help: "Modules the slot pool covers: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj, qkv_proj, gate_up_proj or all (default: inferred from --lora-paths).")
    var loraTargetModules: [String] = []

    @Option(help: "LoRA kernels: csgmv (chunked segments), sgmv, triton (an alias of sgmv), or fused (Loom's: expand inside the base GEMM).")
    var loraBackend = "csgmv"

    @Option(help: "Most tokens per segment with --lora-backend csgmv.")
    var maxLoraChunkSize = 16

    @Option(help: "Which unpinned adapter leaves a full slot pool: lru or fifo.")
    var loraEvictionPolicy = "lru"

    func options() throws -> LoRAOptions {
        var o = LoRAOptions()
        o.maxLorasPerBatch = maxLorasPerBatch
        o.maxLoadedLoras = maxLoadedLoras
        o.maxLoraRank = maxLoraRank
        o.targetModules = loraTargetModules.isEmpty ? nil : try TargetModule.parse(loraTargetModules)
        o.backend = try LoRABackendKind(flag: loraBackend)
        o.maxChunkSize = maxLoraChunkSize
        guard let policy = EvictionPolicy(rawValue: loraEvictionPolicy) else {
            throw LoomError.invalidArgument("--lora-eviction-policy must be lru or fifo")
        }
        o.evictionPolicy = policy
        try o.validate()
        return o
    }

    func specs() throws -> [LoRAPathSpec] { try loraPaths.map(LoRAPathSpec.init(parsing:)) }

    /// True when LoRA serving is on: adapters given, or a pool shaped for dynamic loading.
    var isEnabled: Bool { !loraPaths.isEmpty || maxLoraRank != nil || !loraTargetModules.isEmpty }
}
