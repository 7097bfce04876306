import CPUBackend
import Foundation
import LoomCore
import LoRA
import ModelFormats
import Models
import Testing

/// The registry, the host cache and the manager's admission rules, on stories260K's adapters.
@Suite struct RegistryAndCacheTests {
    let config = try! ModelConfig.load(directory: fixture("stories260k"))
    let adapterDir = fixture("models/stories260k/adapters")

    func manager(slots: Int = 4, loaded: Int? = nil, rank: Int? = nil, modules: Set<TargetModule>? = nil, initial: [String] = []) throws -> LoRAManager {
        var options = LoRAOptions()
        options.maxLorasPerBatch = slots
        options.maxLoadedLoras = loaded
        options.maxLoraRank = rank
        options.targetModules = modules
        return try LoRAManager(options: options, base: config, backend: CPUBackend(), maxTokens: 64,
                               initial: initial.map { LoRAPathSpec(name: $0, path: "\(adapterDir)/\($0)") })
    }

    @Test func startupInfersRankAndModulesFromLoraPaths() throws {
        let m = try manager(initial: ["r4-qv", "r16-mlp"])
        #expect(m.maxRank == 16)
        #expect(m.targetModules == [.q, .v, .gate, .up, .down])
    }

    @Test func dynamicAdapterAboveThePoolRankIsRefusedWithSGLangsMessage() throws {
        let m = try manager(initial: ["r4-qv"])
        #expect(throws: LoomError.invalidArgument(
            "LoRA adapter big with rank 8 is incompatible with the current LoRA memory pool configuration. Please ensure that the LoRA adapter's rank is within the configured `--max-lora-rank` and that the target modules are included in `--lora-target-modules`.")) {
            try m.load(LoRAPathSpec(name: "big", path: "\(adapterDir)/r8-all"))
        }
        #expect(m.registry.lookup("big") == nil)
    }

    @Test func dynamicAdapterWithModulesOutsideThePoolIsRefused() throws {
        let m = try manager(rank: 64, modules: [.q, .v])
        #expect(throws: LoomError.self) { try m.load(LoRAPathSpec(name: "mlp", path: "\(adapterDir)/r16-mlp")) }
        try m.load(LoRAPathSpec(name: "qv", path: "\(adapterDir)/r4-qv"))
    }

    @Test func allTargetModulesAndRankAcceptEverything() throws {
        let m = try manager(rank: 64, modules: try TargetModule.parse(["all"]))
        for name in ["r4-qv", "r8-all", "r16-mlp", "r32-attn-rslora", "r64-pattern", "r8-layers"] {
            try m.load(LoRAPathSpec(name: name, path: "\(adapterDir)/\(name)"))
        }
        #expect(m.registry.adapters.map(\.name) == ["r4-qv", "r8-all", "r16-mlp", "r32-attn-rslora", "r64-pattern", "r8-layers"])
    }

    @Test func doubleLoadAndUnknownUnloadAreRefused() throws {
        let m = try manager(initial: ["r4-qv"])
        #expect(throws: LoomError.invalidArgument("Failed to load LoRA adapter r4-qv because it is already loaded")) {
            try m.load(LoRAPathSpec(name: "r4-qv", path: "\(adapterDir)/r4-qv"))
        }
        #expect(throws: LoomError.invalidArgument("LoRA adapter nope is not loaded")) { try m.unload(name: "nope") }
    }

    @Test func pinnedAdaptersLeaveOneSlotForDynamicUse() throws {
        let m = try manager(slots: 3, rank: 64, modules: Set(TargetModule.allCases))
        try m.load(LoRAPathSpec(name: "a", path: "\(adapterDir)/r4-qv", pinned: true))
        try m.load(LoRAPathSpec(name: "b", path: "\(adapterDir)/r8-all", pinned: true))
        #expect(throws: LoomError.invalidArgument(
            "Already have 2 pinned adapters, max allowed is 2 (reserving 1 slot for dynamic use). Please unpin some adapters or increase max_loras_per_batch.")) {
            try m.load(LoRAPathSpec(name: "c", path: "\(adapterDir)/r16-mlp", pinned: true))
        }
        try m.load(LoRAPathSpec(name: "c", path: "\(adapterDir)/r16-mlp"))
    }

    @Test func unknownAdapterInARequestListsTheLoadedOnes() throws {
        let m = try manager(initial: ["r4-qv", "r8-all"])
        #expect(throws: LoomError.invalidArgument("The following requested LoRA adapters are not loaded: ghost\nLoaded adapters: r4-qv, r8-all")) {
            try m.registry.resolve(["r4-qv", nil, "ghost"])
        }
    }

    @Test func unloadedAdapterIsGoneAndReloadGetsANewUID() throws {
        let m = try manager(initial: ["r4-qv"])
        let first = m.registry.lookup("r4-qv")!
        try m.unload(name: "r4-qv")
        #expect(throws: LoomError.self) { try m.registry.resolve(["r4-qv"]) }
        let second = try m.load(LoRAPathSpec(name: "r4-qv", path: "\(adapterDir)/r4-qv"))
        #expect(second.uid != first.uid)
    }

    @Test func hostCacheDropsLeastRecentlyUsedAndReadsItBackFromDisk() throws {
        let m = try manager(slots: 2, loaded: 2, rank: 64, modules: Set(TargetModule.allCases))
        let a = try m.load(LoRAPathSpec(name: "a", path: "\(adapterDir)/r4-qv"))
        let b = try m.load(LoRAPathSpec(name: "b", path: "\(adapterDir)/r8-all"))
        _ = try m.hostCache.weights(for: a, base: config)          // a is now more recent than b
        let c = try m.load(LoRAPathSpec(name: "c", path: "\(adapterDir)/r16-mlp"))
        #expect(m.hostCache.residentUIDs == [a.uid, c.uid])
        // b stays registered and is read again when a step needs it.
        #expect(m.registry.adapters.map(\.name) == ["a", "b", "c"])
        let reads = m.hostCache.diskReads
        _ = try m.prepare(rowAdapters: [b, nil])
        #expect(m.hostCache.diskReads == reads + 1)
        #expect(m.hostCache.isResident(b.uid))
        #expect(m.hostCache.residentUIDs.count == 2)
    }

    @Test func registrationStagesSlotImagesAndTheHostCacheBoundsThem() throws {
        let m = try manager(slots: 2, loaded: 2, rank: 64, modules: Set(TargetModule.allCases))
        let a = try m.load(LoRAPathSpec(name: "a", path: "\(adapterDir)/r4-qv"))
        #expect(m.isStaged(a.uid), "packed at registration, off the engine thread")
        let b = try m.load(LoRAPathSpec(name: "b", path: "\(adapterDir)/r8-all"))
        let c = try m.load(LoRAPathSpec(name: "c", path: "\(adapterDir)/r16-mlp"))
        // The host cache dropped a (least recently used): its image goes with it.
        #expect(!m.isStaged(a.uid) && m.isStaged(b.uid) && m.isStaged(c.uid))
        // A step that needs a reads it back and packs it again.
        _ = try m.prepare(rowAdapters: [a, nil])
        #expect(m.isStaged(a.uid))
        // An unloaded adapter's image goes at the next step.
        try m.unload(name: "c")
        _ = try m.prepare(rowAdapters: [nil])
        #expect(!m.isStaged(c.uid))
    }

    @Test func pinnedAdaptersStayInHostMemory() throws {
        let m = try manager(slots: 3, loaded: 3, rank: 64, modules: Set(TargetModule.allCases))
        let p = try m.load(LoRAPathSpec(name: "p", path: "\(adapterDir)/r4-qv", pinned: true))
        for name in ["r8-all", "r16-mlp", "r32-attn-rslora", "r64-pattern"] {
            try m.load(LoRAPathSpec(name: name, path: "\(adapterDir)/\(name)"))
        }
        #expect(m.hostCache.isResident(p.uid))
    }

    @Test func optionsRefuseTooFewLoadedLoras() {
        var options = LoRAOptions()
        options.maxLorasPerBatch = 4
        options.maxLoadedLoras = 2
        #expect(throws: LoomError.invalidArgument("--max-loaded-loras (2) must be at least --max-loras-per-batch (4)")) {
            try options.validate()
        }
    }
}
