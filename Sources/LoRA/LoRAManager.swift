import Foundation
import LoomCore
import ModelFormats
import Models

/// Owns the adapter registry, the host cache, the device slot pool and its buffers, and turns each
/// step's per-row adapters into a kernel plan. With `--lora-backend fused` it also owns the widened
/// weights of the targeted groups, which replace the model's own (`ProjectionWeights`). `load`/`unload` may be called from any thread;
/// `prepare` only from the thread that runs the model.
public final class LoRAManager {
    public let options: LoRAOptions
    public let base: ModelConfig
    public let registry = AdapterRegistry()
    public let hostCache: HostAdapterCache
    /// The pool's rank and modules: what `--max-lora-rank` / `--lora-target-modules` gave or startup inferred.
    public let maxRank: Int
    public let targetModules: Set<TargetModule>

    private var pool: SlotPool
    private let pendingRemovals = NSLock()
    private var removedUIDs: [UInt64] = []
    let groups: [ProjectionGroup]
    /// Where each unfused group's shrink output starts within a layer's share of `stepShrunk`, in
    /// stacked modules (q/k/v 3, o 1, gate/up 2, down 1), and the modules of those groups together.
    private let stackOffsets: [ProjectionGroup: Int]
    private let stackedModules: Int
    let ranks: [RankBuffers]
    /// Each rank's copies of the step plan into its buffers, skipped where a buffer already holds the values.
    var uploads: [UploadCache]
    /// Each layer's and group's scalings by slot and module (`[slots · stack]`), as the slots'
    /// device buffers hold them: what a batched shrink (`LoRABatchedShrink`) gives cuBLASLt as alpha.
    var slotScalings: [[ProjectionGroup: [Float]]]
    /// Each rank's device buffer of batched shrinks' pointers (`batchedShrinks`), grown as steps need.
    var batchedPointers: [DeviceTensor?]
    private let maxTokens: Int
    /// Staged host images of adapters (by uid) for asynchronous slot loads: packed when the adapter
    /// is registered (on the registering thread), or by `prepare` for one whose weights the host
    /// cache had dropped. Guarded by `stagedLock`.
    var staged: [UInt64: [StagedImage]] = [:]
    let stagedLock = NSLock()

    struct GroupBuffers {
        var a: DeviceTensor, scalings: DeviceTensor, outOffsets: [Int]
        /// The slots' B `[slots, out, R]` (shrink then expand), or nil for a fused group.
        var b: DeviceTensor?
        /// A fused group's widened base weight `[out (+ extension), in + extension]`, whose first
        /// `out` rows are the model's own: B of slot `s`, module `m` at columns
        /// `in + (s·stack + m)·R ..< + rank` (split extensions, `splitGroups`: `in + s·R ..< + rank`
        /// in module m's rows); where decode steps expand in the consumer
        /// (`consumerRows`), A of that slot and module at rows `out + (s·stack + m)·R ..< + rank`.
        var fusedWeight: DeviceTensor?
        /// A fused group's B as `b` holds it, for the consumer's delta (`LoRADelta`).
        var deltaB: DeviceTensor?
    }

    /// One tensor-parallel rank's slot buffers, S-LoRA style: for column-parallel groups (q/k/v,
    /// gate/up) A is whole and B holds the rank's output rows; for row-parallel groups (o, down)
    /// A holds the rank's input columns, the rank-r shrink result is all-reduced, and B is whole.
    struct RankBuffers {
        var backend: ComputeBackend
        var shard: TensorShard
        var communicator: Communicator?
        var layers: [[ProjectionGroup: GroupBuffers]]
        var permutation, segmentStarts, segmentSlots, slotRanks: DeviceTensor
        var shrunk: DeviceTensor
        /// Fused groups: each group's GEMM input `[maxTokens, in + extension]` (shared by the layers,
        /// zeroed once per step), and the shrink's zero f32 scratch.
        var fusedInputs: [ProjectionGroup: DeviceTensor]
        var fusedScratch: DeviceTensor?
        /// Fused groups of a step of at most `consumerRows` rows: each group's GEMM output
        /// `[consumerRows, out + extension]`, the K-slices of a row-parallel one (f32), and each
        /// row's slot.
        var consumerOutputs: [ProjectionGroup: DeviceTensor]
        var consumerSlices: DeviceTensor?
        var rowSlots: DeviceTensor
        /// Steps of at most `stepShrunkRows` rows: one shrink output per layer and group, all
        /// zeroed by one memset before the step (`LoRAKernelPlan.outputsZeroed`).
        var stepShrunk: DeviceTensor
    }

    /// Creates the pool, inferring rank and target modules from `initial` adapters where the
    /// options leave them open, and loads the initial adapters.
    public convenience init(options: LoRAOptions, base: ModelConfig, backend: ComputeBackend, maxTokens: Int, initial: [LoRAPathSpec]) throws {
        try self.init(options: options, base: base, backends: [backend], communicators: [nil], maxTokens: maxTokens, initial: initial)
    }

    /// The pool of a loaded model, on its ranks; `--lora-backend fused` widens the model's weights.
    public convenience init(options: LoRAOptions, model: LlamaModel, maxTokens: Int, initial: [LoRAPathSpec]) throws {
        try self.init(options: options, base: model.config, backends: model.ranks.map(\.backend), communicators: model.ranks.map(\.communicator),
                      maxTokens: maxTokens, initial: initial, weights: model)
    }

    /// A pool sharded over tensor-parallel ranks, one backend and communicator per rank.
    /// `weights`, the model's projections, is needed by `--lora-backend fused`, which widens them.
    public init(options: LoRAOptions, base: ModelConfig, backends: [ComputeBackend], communicators: [Communicator?], maxTokens: Int, initial: [LoRAPathSpec],
                weights: ProjectionWeights? = nil) throws {
        try options.validate()
        if options.backend == .fused {
            guard let weights, weights.tensorParallelSize == backends.count, weights.numLayers == base.numLayers else {
                throw LoomError.invalidArgument("--lora-backend fused needs the model's weights on every rank")
            }
        }
        self.options = options
        self.base = base
        self.maxTokens = maxTokens
        hostCache = HostAdapterCache(capacity: options.maxLoadedLoras ?? max(options.maxLorasPerBatch, initial.count, 1))
        let loaded = try initial.map { spec in (spec, try PEFTAdapter.load(path: spec.path, base: base)) }
        maxRank = options.maxLoraRank ?? loaded.map(\.1.maxRank).max() ?? 0
        let targets = options.targetModules ?? loaded.reduce(into: Set<TargetModule>()) { $0.formUnion($1.1.targetModules) }
        targetModules = targets
        pool = SlotPool(slotCount: options.maxLorasPerBatch, policy: options.evictionPolicy)
        let groups = ProjectionGroup.allCases.filter { !Self.modules(of: $0).filter(targets.contains).isEmpty }
        self.groups = groups
        let fusedGroups = Set(groups.filter { g in
            options.backend == .fused && !(Self.isRowParallel(Self.modules(of: g)[0]) && backends.count > 1)
                && Self.inputColumns(Self.modules(of: g)[0], base, TensorShard(rank: 0, size: backends.count)).count % 8 == 0
        })
        self.fusedGroups = fusedGroups
        // Split extensions: stacked fused groups of equal module widths (gate/up).
        let splitGroups = Set(fusedGroups.filter { g in
            let widths = Self.modules(of: g).map { Self.outputRows($0, base, TensorShard(rank: 0, size: backends.count)).count }
            return options.fusedSplitStacks && widths.count > 1 && Set(widths).count == 1
        })
        self.splitGroups = splitGroups
        let r = max(maxRank, 1)
        // The consumers add deltas up to `fusedConsumerMaxRank` (at most `maxConsumerRank`).
        let consumes = !fusedGroups.isEmpty && backends.count == 1 && r <= min(options.fusedConsumerMaxRank, Self.maxConsumerRank)
        let consumerRows = consumes ? min(maxTokens, options.fusedDecodeRows) : 0
        self.consumerRows = consumerRows
        // The fused groups that decode with consumer deltas (`LoRAOptions.fusedConsumerGroups`); the
        // others keep the widened K.
        let consumerGroups = consumerRows == 0 ? [] : fusedGroups.intersection(options.fusedConsumerGroups ?? fusedGroups)
        self.consumerGroups = consumerGroups
        // Shrink outputs only for the groups that shrink then expand (fused groups write beside x).
        var offsets: [ProjectionGroup: Int] = [:], stacked = 0
        for g in groups where !fusedGroups.contains(g) {
            offsets[g] = stacked
            stacked += Self.modules(of: g).count
        }
        stackOffsets = offsets
        stackedModules = stacked
        let slots = options.maxLorasPerBatch
        ranks = try backends.indices.map { index in
            let backend = backends[index]
            let shard = TensorShard(rank: index, size: backends.count)
            var layers: [[ProjectionGroup: GroupBuffers]] = []
            for _ in 0..<base.numLayers {
                var layer: [ProjectionGroup: GroupBuffers] = [:]
                for g in groups {
                    let mods = Self.modules(of: g)
                    let inFeatures = Self.inputColumns(mods[0], base, shard).count
                    let offsets = Self.offsets(of: g, base, shard)
                    layer[g] = GroupBuffers(
                        a: try backend.allocate(Shape(slots, mods.count * r, inFeatures), dtype: backend.weightDType),
                        scalings: try backend.allocate(Shape(slots, mods.count), dtype: .f32),
                        outOffsets: offsets,
                        b: fusedGroups.contains(g) ? nil : try backend.allocate(Shape(slots, offsets.last!, r), dtype: backend.weightDType),
                        deltaB: consumerGroups.contains(g)
                            ? try backend.allocate(Shape(slots, offsets.last!, r), dtype: backend.weightDType) : nil)
                }
                layers.append(layer)
            }
            var fusedInputs: [ProjectionGroup: DeviceTensor] = [:], consumerOutputs: [ProjectionGroup: DeviceTensor] = [:]
            var sliceFloats = 0
            for g in fusedGroups {
                let mods = Self.modules(of: g), inFeatures = Self.inputColumns(mods[0], base, shard).count
                // The consumers' rows of A: every slot's stack·R; the columns of B: the same, or R a
                // slot in each module's own copy of the input (split).
                let extra = Self.fusedExtension(slots: slots, stack: mods.count, rank: r)
                let copies = splitGroups.contains(g) ? mods.count : 1
                let width = inFeatures + Self.fusedExtension(slots: slots, stack: mods.count / copies, rank: r)
                let outFeatures = Self.offsets(of: g, base, shard).last!, tallRows = outFeatures + (consumerGroups.contains(g) ? extra : 0)
                fusedInputs[g] = try backend.allocate(Shape(copies * maxTokens, width), dtype: backend.activationDType)
                if consumerGroups.contains(g) {
                    consumerOutputs[g] = try backend.allocate(Shape(consumerRows, tallRows), dtype: backend.activationDType)
                    if Self.isRowParallel(mods[0]) {
                        let count = backend.maxResidualSliceCount(rows: consumerRows, outFeatures: tallRows, inFeatures: inFeatures)
                        if count > 1 { sliceFloats = max(sliceFloats, count * consumerRows * tallRows) }
                    }
                }
                // The model's weights, widened one layer at a time (each old one freed once copied).
                for l in 0..<base.numLayers {
                    let old = weights!.projection(rank: index, layer: l, group: g)
                    precondition(old.shape == Shape(outFeatures, inFeatures), "fused: \(g) weight \(old.shape)")
                    let wide = try backend.allocate(Shape(tallRows, width), dtype: old.dtype)
                    backend.copyColumns(old, into: wide.rows(outFeatures), column: 0)
                    backend.synchronize()
                    weights!.replaceProjection(rank: index, layer: l, group: g, with: wide.rows(outFeatures))
                    layers[l][g]!.fusedWeight = wide
                }
            }
            return RankBuffers(
                backend: backend, shard: shard, communicator: communicators[index], layers: layers,
                permutation: try backend.allocate(Shape(maxTokens), dtype: .i32),
                segmentStarts: try backend.allocate(Shape(maxTokens + 1), dtype: .i32),
                segmentSlots: try backend.allocate(Shape(maxTokens), dtype: .i32),
                slotRanks: try backend.allocate(Shape(slots), dtype: .i32),
                // f32: the shrink kernels add K slices into it; expand rounds to bf16 as it reads.
                shrunk: try backend.allocate(Shape(maxTokens * 3 * r), dtype: .f32),
                fusedInputs: fusedInputs,
                fusedScratch: fusedGroups.isEmpty ? nil : try backend.allocate(Shape(maxTokens * 3 * r), dtype: .f32),
                consumerOutputs: consumerOutputs,
                consumerSlices: sliceFloats > 0 ? try backend.allocate(Shape(sliceFloats), dtype: .f32) : nil,
                rowSlots: try backend.allocate(Shape(maxTokens), dtype: .i32),
                stepShrunk: try backend.allocate(Shape(base.numLayers * stacked * min(maxTokens, Self.stepShrunkRows) * r), dtype: .f32))
        }
        uploads = Array(repeating: UploadCache(), count: backends.count)
        slotScalings = (0..<base.numLayers).map { _ in
            Dictionary(uniqueKeysWithValues: groups.map { ($0, [Float](repeating: 0, count: slots * Self.modules(of: $0).count)) })
        }
        batchedPointers = Array(repeating: nil, count: backends.count)
        for (spec, adapter) in loaded {
            try register(spec, adapter)
        }
    }

    /// The largest rank whose deltas the consumer kernels can add: SiLU·mul stages gate's and up's
    /// xa of a row, 2·R floats, in `LORA_MAX_RANK` (256).
    public static let maxConsumerRank = 128

    /// The groups whose expand runs inside the base GEMM (`--lora-backend fused`).
    let fusedGroups: Set<ProjectionGroup>
    /// The fused groups with split extensions (`LoRAOptions.fusedSplitStacks`): each module's B in
    /// `slots · R` columns of its own rows, read by a batch of the GEMM's module halves, each over its
    /// own copy of the input (`linearStacked`).
    let splitGroups: Set<ProjectionGroup>
    /// The most rows of a step whose fused groups shrink in the GEMM and expand in the consumer
    /// (`LoRAOptions.fusedDecodeRows`; 0 under tensor parallelism, or above `LoRAOptions.fusedConsumerMaxRank`).
    public let consumerRows: Int
    let consumerGroups: Set<ProjectionGroup>

    /// What `--lora-backend fused` costs, for the startup log (nil for the other backends): each
    /// fused group's K growth and the extra weight bytes on rank 0, e.g.
    /// `qkv K +9.4%, gateUp K +6.2%; 0.45 GiB of widened weights`.
    public var fusedSummary: String? {
        guard !fusedGroups.isEmpty else { return nil }
        var parts: [String] = [], bytes = 0
        for g in ProjectionGroup.allCases where fusedGroups.contains(g) {
            guard let wide = ranks[0].layers[0][g]?.fusedWeight else { continue }
            let inFeatures = ranks[0].layers[0][g]!.a.shape[2], extra = wide.shape[1] - inFeatures
            let outFeatures = ranks[0].layers[0][g]!.outOffsets.last!
            parts.append(String(format: "%@ K +%.1f%%", "\(g)", 100 * Double(extra) / Double(inFeatures)))
            bytes += base.numLayers * (wide.count - outFeatures * inFeatures) * wide.dtype.byteCount
        }
        return parts.joined(separator: ", ") + String(format: "; %.2f GiB of widened weights per rank", Double(bytes) / 1_073_741_824)
    }

    /// The columns a fused group's weight and input gain: every slot's `stack · rank` columns,
    /// rounded up to a multiple of 8 (16-byte rows).
    public static func fusedExtension(slots: Int, stack: Int, rank: Int) -> Int {
        (slots * stack * rank + 7) / 8 * 8
    }

    /// The first output row of each module of a group on `shard`, then the group's output width.
    static func offsets(of group: ProjectionGroup, _ c: ModelConfig, _ shard: TensorShard) -> [Int] {
        var offsets = [0]
        for m in modules(of: group) { offsets.append(offsets.last! + outputRows(m, c, shard).count) }
        return offsets
    }

    /// The largest step (decode batches) whose shrink outputs get a buffer per layer and group.
    public static let stepShrunkRows = 256

    /// Row-parallel groups all-reduce their shrink result under tensor parallelism.
    static func isRowParallel(_ m: TargetModule) -> Bool { m == .o || m == .down }

    /// The rows of module `m`'s output that `shard` computes.
    static func outputRows(_ m: TargetModule, _ c: ModelConfig, _ shard: TensorShard) -> Range<Int> {
        let d = c.headDim
        switch m {
        case .q: let h = shard.heads(c); return (h.lowerBound * d)..<(h.upperBound * d)
        case .k, .v: let h = shard.kvHeads(c); return (h.lowerBound * d)..<(h.upperBound * d)
        case .gate, .up: return shard.intermediate(c)
        case .o, .down: return 0..<m.shape(c).out
        }
    }

    /// The columns of module `m`'s input that `shard` holds.
    static func inputColumns(_ m: TargetModule, _ c: ModelConfig, _ shard: TensorShard) -> Range<Int> {
        let d = c.headDim
        switch m {
        case .o: let h = shard.heads(c); return (h.lowerBound * d)..<(h.upperBound * d)
        case .down: return shard.intermediate(c)
        default: return 0..<m.shape(c).in
        }
    }

    /// The projections of each group, in stacking order.
    public static func modules(of group: ProjectionGroup) -> [TargetModule] {
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
            // Packed now, off the engine thread, so that the step that first meets the adapter
            // only queues its copies.
            try stageAhead(ref, adapter)
        } catch {
            hostCache.remove(ref.uid)
            _ = try? registry.unregister(name: spec.name)
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
    /// - Parameters:
    ///   - rowAdapters: the adapter of each token row (nil: base).
    ///   - forGraph: whether the step's launches may be captured in a graph and replayed with other
    ///     adapters. A fused step that is not (prefill) gives its GEMMs on the widened K only the
    ///     columns up to its last adapted slot.
    public func prepare(rowAdapters: [AdapterRef?], forGraph: Bool = true) throws -> LoRAApplier? {
        precondition(rowAdapters.count <= maxTokens, "a step of \(rowAdapters.count) rows exceeds \(maxTokens)")
        for uid in pendingRemovals.withLock({ () -> [UInt64] in defer { removedUIDs.removeAll() }; return removedUIDs }) {
            pool.remove(uid)
            stagedLock.withLock { staged[uid] = nil }
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
        if !loads.isEmpty {
            for rb in ranks { rb.backend.fenceUploads() }
        }
        var slotRanks = [Int32](repeating: 0, count: options.maxLorasPerBatch)
        for (uid, slot) in slots { slotRanks[slot] = Int32(refs[uid]?.maxRank ?? 0) }
        let rowSlots = rowAdapters.map { slots[$0?.uid ?? 0]! }
        let n = rowAdapters.count
        let consumes = n <= consumerRows
        // A fused step on the widened K outside graphs (prefill) cuts its rows into one segment per
        // slot, so the fused shrink reads each slot's A once per 64 rows rather than once per chunk.
        let kind: LoRABackendKind = options.backend == .fused && !consumes && !forGraph ? .sgmv : options.backend
        let plan = BatchPlan(rowSlots: rowSlots, kind: kind, chunkSize: options.maxChunkSize)
        // A graph step's launches are sized by bounds that hold for any mix of adapters, and its
        // widened GEMMs take every slot's columns. A step that no graph replays launches for its own
        // segments and longest one (a prefill of 4 adapters in 8 slots: 4 segments of 512 rows rather
        // than 8 of up to 2048, 7 of 8 blocks idle) and takes the slots from its first adapted one
        // to its last.
        let capacity: Int, maxSegmentLength: Int, firstAdaptedSlot: Int, usedSlots: Int
        if forGraph {
            capacity = BatchPlan.segmentCapacity(rows: n, slots: options.maxLorasPerBatch, kind: kind, chunkSize: options.maxChunkSize)
            maxSegmentLength = BatchPlan.maxSegmentLength(rows: n, kind: kind, chunkSize: options.maxChunkSize)
            (firstAdaptedSlot, usedSlots) = (0, options.maxLorasPerBatch)
        } else {
            let adaptedSlots = plan.segmentSlots.map(Int.init).filter { slotRanks[$0] > 0 }
            (capacity, maxSegmentLength) = (plan.segmentCount, plan.longestSegment)
            (firstAdaptedSlot, usedSlots) = (adaptedSlots.min() ?? 0, (adaptedSlots.max() ?? 0) + 1)
        }
        let padded = plan.padded(toCapacity: capacity)
        // A step whose every group adds its delta in the consumer runs no shrink kernel.
        let shrinks = !consumes || groups.contains { !consumerGroups.contains($0) }
        let zeroed = shrinks && n <= Self.stepShrunkRows
        let plans = ranks.indices.map { r -> LoRAKernelPlan in
            let rb = ranks[r]
            if zeroed && stackedModules > 0 { rb.backend.zero(rb.stepShrunk.rows(0, base.numLayers * stackedModules * n * max(maxRank, 1))) }
            if consumes { uploads[r].copy(rowSlots.map(Int32.init), to: rb.rowSlots, on: rb.backend) }
            for g in rb.fusedInputs.keys where !consumes || !consumerGroups.contains(g) {
                rb.backend.zero(fusedInputCopies(rank: r, group: g, rows: n, usedSlots: usedSlots)!)
            }
            uploads[r].copy(plan.permutation, to: rb.permutation, on: rb.backend)
            uploads[r].copy(padded.starts, to: rb.segmentStarts, on: rb.backend)
            uploads[r].copy(padded.slots, to: rb.segmentSlots, on: rb.backend)
            uploads[r].copy(slotRanks, to: rb.slotRanks, on: rb.backend)
            return LoRAKernelPlan(
                permutation: rb.permutation.rows(n),
                segmentStarts: rb.segmentStarts.rows(capacity + 1),
                segmentSlots: rb.segmentSlots.rows(capacity),
                slotRanks: rb.slotRanks,
                numSegments: plan.segmentCount,
                maxRank: Int(slotRanks.max() ?? 0),
                segmentCapacity: capacity,
                maxSegmentLength: maxSegmentLength,
                outputsZeroed: zeroed,
                firstAdaptedSlot: firstAdaptedSlot)
        }
        let batched = forGraph ? [] : try batchedShrinks(rowSlots: rowSlots, slotRanks: slotRanks, consumes: consumes, usedSlots: usedSlots)
        return StepApplier(manager: self, plans: plans, rows: n, consumes: consumes, usedSlots: usedSlots, batched: batched)
    }

    /// Where the op making a fused group's input writes it: rows `0 ..< n` of the GEMM input
    /// `[n, in + extension]`, its extension cut after the first `usedSlots` slots (the buffer's first
    /// elements, rows packed at that width); with split extensions every copy, `[copies, n, width]`
    /// (`DeviceTensor.outputCopies`), so that no copy of x follows.
    fileprivate func fusedInput(rank: Int, group: ProjectionGroup, rows n: Int, usedSlots: Int) -> DeviceTensor? {
        fusedInputCopies(rank: rank, group: group, rows: n, usedSlots: usedSlots).map(inputBuffer)
    }

    private func inputBuffer(_ copies: DeviceTensor) -> DeviceTensor {
        copies.shape[0] == 1 ? copies.outputCopies.first : copies
    }

    /// A fused group's GEMM input as every copy of it: `[copies, n, in + extension]`, one copy, or
    /// with split extensions one a module (the first is `fusedInput`).
    func fusedInputCopies(rank: Int, group: ProjectionGroup, rows n: Int, usedSlots: Int) -> DeviceTensor? {
        guard let wide = ranks[rank].fusedInputs[group] else { return nil }
        let stack = Self.modules(of: group).count, r = max(maxRank, 1)
        let copies = splitGroups.contains(group) ? stack : 1
        let inFeatures = wide.shape.rowCount - Self.fusedExtension(slots: options.maxLorasPerBatch, stack: stack / copies, rank: r)
        let width = inFeatures + Self.fusedExtension(slots: usedSlots, stack: stack / copies, rank: r)
        return wide.reshaped(Shape(wide.count)).rows(copies * n * width).reshaped(Shape(copies, n, width))
    }

    /// Queues the group's shrink of `input` (and, for a row-parallel group, its all-reduce) and
    /// returns its output, or nil for a group the pool does not adapt or folds into its GEMM.
    fileprivate func shrink(rank: Int, layer: Int, group: ProjectionGroup, input: DeviceTensor, plan: LoRAKernelPlan, rows: Int) -> DeviceTensor? {
        let rb = ranks[rank]
        guard let buf = rb.layers[layer][group], buf.b != nil else { return nil }
        let mods = Self.modules(of: group)
        let r = max(maxRank, 1)
        let y: DeviceTensor
        if plan.outputsZeroed {
            let start = (layer * stackedModules + stackOffsets[group]!) * rows * r
            y = rb.stepShrunk.rows(start, rows * mods.count * r).reshaped(Shape(rows, mods.count * r))
        } else {
            // One buffer for every group: the next group's shrink is queued after this expand.
            y = rb.shrunk.rows(rows * mods.count * r).reshaped(Shape(rows, mods.count * r))
        }
        rb.backend.loraShrink(input, a: buf.a, out: y, plan: plan, stack: mods.count)
        if Self.isRowParallel(mods[0]), let communicator = rb.communicator {
            communicator.allReduceSum(y)
        }
        return y
    }

    /// Whether a group's shrink may go ahead on the side stream: an adapted, unfused group whose
    /// result is not all-reduced (the communicator queues on the main stream).
    fileprivate func shrinksAhead(rank: Int, layer: Int, group: ProjectionGroup) -> Bool {
        let rb = ranks[rank]
        return rb.layers[layer][group]?.b != nil && (rb.communicator == nil || !Self.isRowParallel(Self.modules(of: group)[0]))
    }

    /// Whether `expand` adds anything into the group's output: an adapted, unfused group.
    fileprivate func expands(rank: Int, layer: Int, group: ProjectionGroup) -> Bool {
        ranks[rank].layers[layer][group]?.b != nil
    }

    fileprivate func expand(rank: Int, layer: Int, group: ProjectionGroup, shrunk y: DeviceTensor, output: DeviceTensor, plan: LoRAKernelPlan) {
        let rb = ranks[rank]
        guard let buf = rb.layers[layer][group], let b = buf.b else { return }
        rb.backend.loraExpand(y, b: b, out: output, plan: plan, scalings: buf.scalings, outOffsets: buf.outOffsets)
    }

    /// A fused group of a step of at most `consumerRows` rows: its tall weight, its output buffer
    /// and K-slices, and the delta its consumer adds.
    fileprivate func consumerLoRA(rank: Int, layer: Int, group: ProjectionGroup, rows n: Int) -> ConsumerLoRA? {
        let rb = ranks[rank]
        guard let buf = rb.layers[layer][group], let tall = buf.fusedWeight, let b = buf.deltaB, let out = rb.consumerOutputs[group] else { return nil }
        let slices = rb.backend.residualSlices(in: Self.isRowParallel(Self.modules(of: group)[0]) ? rb.consumerSlices : nil, rows: n,
                                               outFeatures: out.shape[1], inFeatures: buf.a.shape[2])
        return ConsumerLoRA(weight: tall, output: out.rows(n), slices: slices,
                            delta: LoRADelta(b: b, scalings: buf.scalings, rowSlots: rb.rowSlots.rows(n), slotRanks: rb.slotRanks, outOffsets: buf.outOffsets))
    }

    fileprivate func gemmInput(rank: Int, layer: Int, group: ProjectionGroup, input: DeviceTensor, plan: LoRAKernelPlan, rows: Int,
                               usedSlots: Int, batched: LoRABatchedShrink?) -> DeviceTensor {
        let rb = ranks[rank]
        guard let buf = rb.layers[layer][group], let copies = fusedInputCopies(rank: rank, group: group, rows: rows, usedSlots: usedSlots),
              let scratch = rb.fusedScratch else { return input }
        let buffer = inputBuffer(copies), (out, count, copyStride) = copies.outputCopies
        // The model's ops write x there already, into every copy (`inputBuffer`); any other input is
        // copied in.
        if !input.isSameView(as: buffer) { rb.backend.copyColumns(input, into: buffer, column: 0) }
        if let batched, rb.backend.loraShrinkBatched(batched) { return buffer }
        rb.backend.loraShrinkFused(out, a: buf.a, scalings: buf.scalings, plan: plan, stack: Self.modules(of: group).count, scratch: scratch,
                                   moduleStride: count > 1 ? copyStride : 0)
        return buffer
    }
}

/// The applier of one step: each rank's plan in its device buffers, valid until the next `prepare`.
final class StepApplier: LoRAApplier {
    let manager: LoRAManager
    let plans: [LoRAKernelPlan]
    let rows: Int
    /// Whether fused groups expand in their consumers this step (`consumerRows`).
    let consumes: Bool
    /// The slots whose columns the widened GEMMs take: every slot, or up to the last adapted one.
    let usedSlots: Int

    /// Each rank's batched shrinks by layer and group (`LoRAManager.batchedShrinks`; empty: none).
    let batched: [[[ProjectionGroup: LoRABatchedShrink]]]

    init(manager: LoRAManager, plans: [LoRAKernelPlan], rows: Int, consumes: Bool, usedSlots: Int, batched: [[[ProjectionGroup: LoRABatchedShrink]]]) {
        self.manager = manager
        self.batched = batched
        self.plans = plans
        self.rows = rows
        self.consumes = consumes
        self.usedSlots = usedSlots
        ahead = plans.map { _ in Ahead() }
    }

    /// The shrink a rank queued ahead on the side stream and has not expanded yet; one box per
    /// rank, as tensor-parallel ranks run on their own threads.
    private final class Ahead {
        var pending: (layer: Int, group: ProjectionGroup, shrunk: DeviceTensor)?
    }
    private let ahead: [Ahead]

    func shrinkAhead(rank: Int, layer: Int, group: ProjectionGroup, input: DeviceTensor) {
        guard manager.shrinksAhead(rank: rank, layer: layer, group: group) else { return }
        var y: DeviceTensor?
        let forked = manager.ranks[rank].backend.forkSideStream {
            y = manager.shrink(rank: rank, layer: layer, group: group, input: input, plan: plans[rank], rows: rows)
        }
        // Not forked: `apply` shrinks in order, after the GEMM.
        if forked, let y { ahead[rank].pending = (layer, group, y) }
    }

    func apply(rank: Int, layer: Int, group: ProjectionGroup, input: DeviceTensor, output: DeviceTensor) {
        let y: DeviceTensor?
        if let a = ahead[rank].pending, a.layer == layer, a.group == group {
            ahead[rank].pending = nil
            manager.ranks[rank].backend.joinSideStream()
            y = a.shrunk
        } else {
            y = manager.shrink(rank: rank, layer: layer, group: group, input: input, plan: plans[rank], rows: rows)
        }
        if let y { manager.expand(rank: rank, layer: layer, group: group, shrunk: y, output: output, plan: plans[rank]) }
    }

    func addsToOutput(rank: Int, layer: Int, group: ProjectionGroup) -> Bool {
        manager.expands(rank: rank, layer: layer, group: group)
    }

    func consumerLoRA(rank: Int, layer: Int, group: ProjectionGroup) -> ConsumerLoRA? {
        consumes ? manager.consumerLoRA(rank: rank, layer: layer, group: group, rows: rows) : nil
    }

    /// Whether the group adds its delta in the consumer this step (its wide input was not zeroed).
    private func expandsInConsumer(_ group: ProjectionGroup) -> Bool {
        consumes && manager.consumerGroups.contains(group)
    }

    func inputBuffer(rank: Int, layer: Int, group: ProjectionGroup) -> DeviceTensor? {
        expandsInConsumer(group) ? nil : manager.fusedInput(rank: rank, group: group, rows: rows, usedSlots: usedSlots)
    }

    func gemmInput(rank: Int, layer: Int, group: ProjectionGroup, input: DeviceTensor) -> DeviceTensor {
        precondition(!expandsInConsumer(group), "gemmInput of fused \(group) in a consumer-delta step")
        return manager.gemmInput(rank: rank, layer: layer, group: group, input: input, plan: plans[rank], rows: rows, usedSlots: usedSlots,
                                 batched: batched.isEmpty ? nil : batched[rank][layer][group])
    }
}
