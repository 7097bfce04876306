import Foundation
import LoomCore
import ModelFormats
import Models

/// Owns the adapter registry, the host cache, the device slot pool and its buffers, and turns each
/// step's per-row adapters into a kernel plan. `load`/`unload` may be called from any thread;
/// `prepare` only from the thread that runs the model.
public final class LoRAManager {
    public let options: LoRAOptions
    public let base: ModelConfig
    public let registry = AdapterRegistry()
    public let hostCache: HostAdapterCache
    /// The pool's rank and modules: what `--max-lora-rank` / `--lora-target-modules` gave or startup inferred.
    public let maxRank: Int
    public let targetModules: Set<TargetModule>

    private let backend: ComputeBackend
    private var pool: SlotPool
    private let pendingRemovals = NSLock()
    private var removedUIDs: [UInt64] = []
    private let groups: [ProjectionGroup]
    private var buffers: [[ProjectionGroup: GroupBuffers]] = []
    private let planBuffers: PlanBuffers
    private let shrunk: DeviceTensor
    private let maxTokens: Int

    struct GroupBuffers {
        var a: DeviceTensor, b: DeviceTensor, scalings: DeviceTensor
    }

    struct PlanBuffers {
        var permutation, segmentStarts, segmentSlots, slotRanks: DeviceTensor
    }

    /// Creates the pool, inferring rank and target modules from `initial` adapters where the
    /// options leave them open, and loads the initial adapters.
    public init(options: LoRAOptions, base: ModelConfig, backend: ComputeBackend, maxTokens: Int, initial: [LoRAPathSpec]) throws {
        try options.validate()
        self.options = options
        self.base = base
        self.backend = backend
        self.maxTokens = maxTokens
        hostCache = HostAdapterCache(capacity: options.maxLoadedLoras ?? max(options.maxLorasPerBatch, initial.count, 1))
        let loaded = try initial.map { spec in (spec, try PEFTAdapter.load(path: spec.path, base: base)) }
        maxRank = options.maxLoraRank ?? loaded.map(\.1.maxRank).max() ?? 0
        let targets = options.targetModules ?? loaded.reduce(into: Set<TargetModule>()) { $0.formUnion($1.1.targetModules) }
        targetModules = targets
        pool = SlotPool(slotCount: options.maxLorasPerBatch, policy: options.evictionPolicy)
        groups = ProjectionGroup.allCases.filter { !Self.modules(of: $0).filter(targets.contains).isEmpty }
        let slots = options.maxLorasPerBatch, r = max(maxRank, 1)
        for _ in 0..<base.numLayers {
            var layer: [ProjectionGroup: GroupBuffers] = [:]
            for g in groups {
                let mods = Self.modules(of: g)
                let inFeatures = mods[0].shape(base).in
                let outTotal = mods.reduce(0) { $0 + $1.shape(base).out }
                layer[g] = GroupBuffers(
                    a: try backend.allocate(Shape(slots, mods.count * r, inFeatures), dtype: backend.weightDType),
                    b: try backend.allocate(Shape(slots, outTotal, r), dtype: backend.weightDType),
                    scalings: try backend.allocate(Shape(slots, mods.count), dtype: .f32))
            }
            buffers.append(layer)
        }
        planBuffers = PlanBuffers(
            permutation: try backend.allocate(Shape(maxTokens), dtype: .i32),
            segmentStarts: try backend.allocate(Shape(maxTokens + 1), dtype: .i32),
            segmentSlots: try backend.allocate(Shape(maxTokens), dtype: .i32),
            slotRanks: try backend.allocate(Shape(slots), dtype: .i32))
        shrunk = try backend.allocate(Shape(maxTokens * 3 * r), dtype: backend.activationDType)
        for (spec, adapter) in loaded {
            try register(spec, adapter)
        }
    }

    /// The projections of each group, in stacking order.
    static func modules(of group: ProjectionGroup) -> [TargetModule] {
        switch group {
        case .qkv: [.q, .k, .v]
        case .o: [.o]
        case .gateUp: [.gate, .up]
        case .down: [.down]
        }
    }

    // MARK: Loading and unloading

    /// Reads, checks and registers an adapter (`/load_lora_adapter`).
    @discardableResult
    public func load(_ spec: LoRAPathSpec) throws -> AdapterRef {
        if registry.lookup(spec.name) != nil {
            throw LoomError.invalidArgument("Failed to load LoRA adapter \(spec.name) because it is already loaded")
        }
        let adapter = try PEFTAdapter.load(path: spec.path, base: base)
        return try register(spec, adapter)
    }

    @discardableResult
    private func register(_ spec: LoRAPathSpec, _ adapter: PEFTAdapter) throws -> AdapterRef {
        guard adapter.maxRank <= maxRank, adapter.targetModules.isSubset(of: targetModules) else {
            throw LoomError.invalidArgument(
                "LoRA adapter \(spec.name) with rank \(adapter.maxRank) is incompatible with the current LoRA memory pool configuration. Please ensure that the LoRA adapter's rank is within the configured `--max-lora-rank` and that the target modules are included in `--lora-target-modules`.")
        }
        if spec.pinned && registry.pinnedCount >= options.maxLorasPerBatch - 1 {
            throw LoomError.invalidArgument(
                "Already have \(registry.pinnedCount) pinned adapters, max allowed is \(options.maxLorasPerBatch - 1) (reserving 1 slot for dynamic use). Please unpin some adapters or increase max_loras_per_batch.")
        }
        let ref = try registry.register(name: spec.name, path: spec.path, pinned: spec.pinned, maxRank: adapter.maxRank, targetModules: adapter.targetModules)
        do {
            try hostCache.insert(ref, adapter)
        } catch {
            try? registry.unregister(name: spec.name)
            throw error
        }
        return ref
    }

    /// Unregisters an adapter (`/unload_lora_adapter`) and drops its weights and slot at once.
    /// A server with requests in flight uses `beginUnload` / `finishUnload` instead.
    @discardableResult
    public func unload(name: String) throws -> AdapterRef {
        let ref = try beginUnload(name: name)
        finishUnload(ref)
        return ref
    }

    /// Unregisters an adapter: requests naming it are refused from now on, while those already
    /// in flight keep its weights.
    public func beginUnload(name: String) throws -> AdapterRef {
        try registry.unregister(name: name)
    }

    /// Drops an unregistered adapter's weights; its slot empties at the next step.
    public func finishUnload(_ ref: AdapterRef) {
        hostCache.remove(ref.uid)
        pendingRemovals.withLock { removedUIDs.append(ref.uid) }
    }

    /// Slot occupants for diagnostics (`/get_server_info`): uid per slot, nil when empty.
    public var slotOccupants: [UInt64?] { pool.occupants }

    // MARK: Per step

    /// Makes the adapters of a step resident and returns the applier for the model, or nil when
    /// every row is a base row (the step then costs nothing extra).
    /// - Parameter rowAdapters: the adapter of each token row (nil: base).
    public func prepare(rowAdapters: [AdapterRef?]) throws -> LoRAApplier? {
        precondition(rowAdapters.count <= maxTokens, "a step of \(rowAdapters.count) rows exceeds \(maxTokens)")
        for uid in pendingRemovals.withLock({ () -> [UInt64] in defer { removedUIDs.removeAll() }; return removedUIDs }) {
            pool.remove(uid)
        }
        if rowAdapters.allSatisfy({ $0 == nil }) || groups.isEmpty { return nil }
        var refs: [UInt64: AdapterRef] = [:]
        for case let ref? in rowAdapters { refs[ref.uid] = ref }
        let batch = Set(rowAdapters.map { $0?.uid ?? 0 })
        let pinned = Set(refs.values.filter(\.pinned).map(\.uid))
        let (slots, loads) = try pool.assign(batch, pinned: pinned)
        for load in loads {
            try copyIntoSlot(refs[load.uid]!, slot: load.slot)
        }
        var ranks = [Int32](repeating: 0, count: options.maxLorasPerBatch)
        for (uid, slot) in slots { ranks[slot] = Int32(refs[uid]?.maxRank ?? 0) }
        let plan = BatchPlan(rowSlots: rowAdapters.map { slots[$0?.uid ?? 0]! }, kind: options.backend, chunkSize: options.maxChunkSize)
        backend.copy(plan.permutation, to: planBuffers.permutation)
        backend.copy(plan.segmentStarts, to: planBuffers.segmentStarts)
        backend.copy(plan.segmentSlots, to: planBuffers.segmentSlots)
        backend.copy(ranks, to: planBuffers.slotRanks)
        let kernelPlan = LoRAKernelPlan(
            permutation: planBuffers.permutation.rows(rowAdapters.count),
            segmentStarts: planBuffers.segmentStarts.rows(plan.segmentCount + 1),
            segmentSlots: planBuffers.segmentSlots.rows(plan.segmentCount),
            slotRanks: planBuffers.slotRanks,
            numSegments: plan.segmentCount,
            maxRank: Int(ranks.max() ?? 0))
        return StepApplier(manager: self, plan: kernelPlan, rows: rowAdapters.count)
    }

    /// Writes an adapter's weights into a slot, zero-padded to the pool's rank; modules the adapter
    /// does not adapt get zeros and scaling 0.
    private func copyIntoSlot(_ ref: AdapterRef, slot: Int) throws {
        let adapter = try hostCache.weights(for: ref, base: base)
        let r = max(maxRank, 1)
        for layer in 0..<base.numLayers {
            for g in groups {
                let buf = buffers[layer][g]!
                let mods = Self.modules(of: g)
                let inFeatures = mods[0].shape(base).in
                let outTotal = buf.b.shape[1]
                var a = [Float](repeating: 0, count: mods.count * r * inFeatures)
                var b = [Float](repeating: 0, count: outTotal * r)
                var scalings = [Float](repeating: 0, count: mods.count)
                var outOffset = 0
                for (m, module) in mods.enumerated() {
                    let out = module.shape(base).out
                    if let w = adapter.layers[layer][module] {
                        a.replaceSubrange((m * r * inFeatures)..<((m * r + w.rank) * inFeatures), with: w.a)
                        for row in 0..<out {
                            for j in 0..<w.rank { b[(outOffset + row) * r + j] = w.b[row * w.rank + j] }
                        }
                        scalings[m] = w.scaling
                    }
                    outOffset += out
                }
                backend.copy(a, to: buf.a.rows(slot, 1))
                backend.copy(b, to: buf.b.rows(slot, 1))
                backend.copy(scalings, to: buf.scalings.rows(slot, 1))
            }
        }
    }

    fileprivate func apply(layer: Int, group: ProjectionGroup, input: DeviceTensor, output: DeviceTensor, plan: LoRAKernelPlan, rows: Int) {
        guard let buf = buffers[layer][group] else { return }
        let mods = Self.modules(of: group)
        let r = max(maxRank, 1)
        let y = shrunk.rows(rows * mods.count * r).reshaped(Shape(rows, mods.count * r))
        backend.loraShrink(input, a: buf.a, out: y, plan: plan, stack: mods.count)
        var offsets = [0]
        for m in mods { offsets.append(offsets.last! + m.shape(base).out) }
        backend.loraExpand(y, b: buf.b, out: output, plan: plan, scalings: buf.scalings, outOffsets: offsets)
    }
}

/// The applier of one step: the plan in device buffers, valid until the next `prepare`.
final class StepApplier: LoRAApplier {
    let manager: LoRAManager
    let plan: LoRAKernelPlan
    let rows: Int

    init(manager: LoRAManager, plan: LoRAKernelPlan, rows: Int) {
        self.manager = manager
        self.plan = plan
        self.rows = rows
    }

    func apply(layer: Int, group: ProjectionGroup, input: DeviceTensor, output: DeviceTensor) {
        manager.apply(layer: layer, group: group, input: input, output: output, plan: plan, rows: rows)
    }
}
