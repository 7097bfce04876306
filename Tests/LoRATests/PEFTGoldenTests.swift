import CPUBackend
import Foundation
import LoomCore
@testable import LoRA
import ModelFormats
import Models
import Testing

/// Every fixture model with its PEFT adapters against the logits and greedy tokens that
/// transformers + PEFT recorded (`scripts/make_fixtures.py`), for both plan kinds, with fewer
/// device slots and host slots than adapters so that slots are evicted and adapters re-read.
@Suite struct PEFTGoldenTests {
    static let models = ["stories260k", "llama-tiny", "mistral-tiny", "qwen2-tiny"]
    static let kinds: [LoRABackendKind] = [.sgmv, .csgmv, .fused]

    struct Setup {
        var model: LlamaModel
        var manager: LoRAManager
        var reference: [String: Any]
    }

    func setup(_ name: String, kind: LoRABackendKind, slots: Int, residualSlices: Int = 1, fusedDecodeRows: Int = LoRAOptions().fusedDecodeRows,
               consumerGroups: Set<ProjectionGroup>? = nil, splitStacks: Bool = false, batchedShrinkRows: Int? = nil) throws -> Setup {
        let reference = try loadJSON(fixture("models/\(name)/reference.json"))
        let modelDir = packageRoot.appendingPathComponent(reference["model_dir"] as! String).path
        let backend = CPUBackend()
        backend.residualSlices = residualSlices
        let model = try LlamaModel(directory: modelDir, backend: backend, maxTokens: 1024, maxSequences: 32)
        let adapterDir = fixture("models/\(name)/adapters")
        let names = try FileManager.default.contentsOfDirectory(atPath: adapterDir).sorted()
        #expect(names.count == 6)
        var options = LoRAOptions()
        options.maxLorasPerBatch = slots
        options.maxLoadedLoras = slots
        options.backend = kind
        options.maxChunkSize = 4
        options.fusedDecodeRows = fusedDecodeRows
        // The fixtures' pools are of rank 64: let the consumers take them, so both fused paths run.
        options.fusedConsumerMaxRank = LoRAManager.maxConsumerRank
        options.fusedConsumerGroups = consumerGroups
        options.fusedSplitStacks = splitStacks
        if let batchedShrinkRows { options.batchedShrinkRows = batchedShrinkRows }
        let specs = names.map { LoRAPathSpec(name: $0, path: "\(adapterDir)/\($0)") }
        let manager = try LoRAManager(options: options, model: model, maxTokens: 1024, initial: specs)
        return Setup(model: model, manager: manager, reference: reference)
    }

    /// Runs `prompts` (adapter names, nil for base) as one generation and compares with the reference.
    /// `forGraph`: whether each step prepares as for a graph (the widened K over every slot) or cuts
    /// the widened K after its last adapted slot, as the engine's eager steps do.
    func check(_ s: Setup, adapters: [String?], prompts: [[Int]], logits: [[Float]], greedy: [[Int]], label: String,
               forGraph: Bool = false) throws {
        let refs = try s.manager.registry.resolve(adapters)
        let requests = zip(prompts, refs).map { prompt, ref in
            GenerationRequest(promptIds: prompt, maxNewTokens: 32, adapterKey: ref?.uid ?? 0)
        }
        var first = [[Float]](repeating: [], count: prompts.count)
        let outputs = try Generator(model: s.model).generate(
            requests, maxAdaptersPerStep: s.manager.options.maxLorasPerBatch,
            stepHook: { rows in try s.manager.prepare(rowAdapters: rows.map { refs[$0] }, forGraph: forGraph) },
            onLogits: { seq, step, l in if step == 0 { first[seq] = l } })
        for i in prompts.indices {
            let diff = maxAbsDifference(first[i], logits[i])
            #expect(diff < 1e-4, "\(label) row \(i) (\(adapters[i] ?? "base")): logits differ by \(diff)")
            #expect(outputs[i] == greedy[i], "\(label) row \(i) (\(adapters[i] ?? "base")): greedy tokens differ")
        }
    }

    @Test(arguments: models, kinds)
    func singleAdapterCasesMatchPEFT(model name: String, kind: LoRABackendKind) throws {
        let s = try setup(name, kind: kind, slots: 3)
        let cases = s.reference["cases"] as! [[String: Any]]
        #expect(cases.count == 21)
        // All cases as one run: 7 distinct adapters (base included) through 3 slots.
        try check(s, adapters: cases.map { $0["adapter"] as? String }, prompts: cases.map { ints($0["prompt_ids"]) },
                  logits: cases.map { floats($0["last_logits"]) }, greedy: cases.map { ints($0["greedy_ids"]) },
                  label: "\(name) \(kind) cases")
    }

    /// o and down cut into 2 K-slices that the next RMSNorm sums, where no expand adds into their
    /// output: every group under fused (its widened K sliced too), none under csgmv.
    @Test(arguments: ["llama-tiny", "qwen2-tiny"], [LoRABackendKind.csgmv, .fused])
    func slicedRowParallelGEMMsMatchPEFT(model name: String, kind: LoRABackendKind) throws {
        let s = try setup(name, kind: kind, slots: 3, residualSlices: 2)
        let cases = s.reference["cases"] as! [[String: Any]]
        try check(s, adapters: cases.map { $0["adapter"] as? String }, prompts: cases.map { ints($0["prompt_ids"]) },
                  logits: cases.map { floats($0["last_logits"]) }, greedy: cases.map { ints($0["greedy_ids"]) },
                  label: "\(name) \(kind) cases, 2 slices")
    }

    /// The fused backend's two ways, each for every step: the widened K (shrink kernel, expand in
    /// the GEMM) and the consumer's delta (shrink in the GEMM, expand in RoPE, SiLU·mul and the
    /// RMSNorm), the latter with o and down in 2 K-slices too. By default decode steps take the second.
    /// The widened K runs both as graph steps prepare it (every slot's columns) and as eager steps
    /// do (cut after the step's last adapted slot). Steps may also mix the two by group: consumer
    /// deltas for some groups, the widened K for the others, so an op adding a delta writes the wide
    /// input of the next group's GEMM (SiLU·mul into down's, the RMSNorm into gate/up's or q/k/v's).
    /// With split extensions gate/up's widened GEMM is a batch of its two halves, each over its own
    /// copy of the input.
    @Test(arguments: ["llama-tiny", "qwen2-tiny"], [(0, 1, false, nil, false), (0, 1, true, nil, false), (1024, 1, false, nil, false),
                                                    (1024, 2, false, nil, false), (1024, 1, false, "qkv+gateUp", false),
                                                    (1024, 2, false, "o+down", false), (0, 1, false, nil, true), (0, 1, true, nil, true),
                                                    (1024, 2, false, "o+down", true)])
    func bothFusedPathsMatchPEFT(model name: String, path: (rows: Int, slices: Int, forGraph: Bool, consumers: String?, split: Bool)) throws {
        let s = try setup(name, kind: .fused, slots: 3, residualSlices: path.slices, fusedDecodeRows: path.rows,
                          consumerGroups: path.consumers.map { names in Set(ProjectionGroup.allCases.filter { names.split(separator: "+").contains(Substring("\($0)")) }) },
                          splitStacks: path.split)
        let cases = s.reference["cases"] as! [[String: Any]]
        let how = "consumer rows \(path.rows), \(path.slices) slices, forGraph \(path.forGraph), consumers \(path.consumers ?? "all")"
            + (path.split ? ", split extensions" : "")
        try check(s, adapters: cases.map { $0["adapter"] as? String }, prompts: cases.map { ints($0["prompt_ids"]) },
                  logits: cases.map { floats($0["last_logits"]) }, greedy: cases.map { ints($0["greedy_ids"]) },
                  label: "\(name) fused, \(how)", forGraph: path.forGraph)
        for (b, batch) in (s.reference["mixed_batches"] as! [[String: Any]]).enumerated() {
            try check(s, adapters: (batch["adapters"] as! [Any]).map { $0 as? String }, prompts: (batch["prompt_ids"] as! [Any]).map(ints),
                      logits: (batch["last_logits"] as! [Any]).map(floats), greedy: (batch["greedy_ids"] as! [Any]).map(ints),
                      label: "\(name) fused batch \(b), \(how)", forGraph: path.forGraph)
        }
    }

    /// Eager fused steps whose adapters' rows come in runs of at least `batchedShrinkRows` shrink by
    /// batched products over those runs (`LoRABatchedShrink`: the layout, the addresses uploaded with
    /// the plan, each layer's instances), here with runs of 4 rows or more, so the fixtures' prompts
    /// take them; with and without split extensions. The backend must have run them.
    @Test(arguments: ["llama-tiny", "qwen2-tiny"], [false, true])
    func batchedShrinksMatchPEFT(model name: String, split: Bool) throws {
        let s = try setup(name, kind: .fused, slots: 3, fusedDecodeRows: 0, splitStacks: split, batchedShrinkRows: 4)
        let backend = try #require(s.model.ranks[0].backend as? CPUBackend)
        let cases = s.reference["cases"] as! [[String: Any]]
        let label = "\(name) fused, batched shrinks" + (split ? ", split extensions" : "")
        try check(s, adapters: cases.map { $0["adapter"] as? String }, prompts: cases.map { ints($0["prompt_ids"]) },
                  logits: cases.map { floats($0["last_logits"]) }, greedy: cases.map { ints($0["greedy_ids"]) }, label: label)
        for (b, batch) in (s.reference["mixed_batches"] as! [[String: Any]]).enumerated() {
            try check(s, adapters: (batch["adapters"] as! [Any]).map { $0 as? String }, prompts: (batch["prompt_ids"] as! [Any]).map(ints),
                      logits: (batch["last_logits"] as! [Any]).map(floats), greedy: (batch["greedy_ids"] as! [Any]).map(ints),
                      label: "\(label), batch \(b)")
        }
        #expect(backend.batchedShrinkCalls > 0, "\(label): no batched shrink ran")
    }

    /// Decode steps expand in the consumers only up to `fusedConsumerMaxRank` (by default 16): the
    /// fixtures' pools of rank 64 take the widened K, unless the limit is raised.
    @Test func consumersTakeDecodeStepsOnlyUpToTheirRank() throws {
        let adapters = fixture("models/llama-tiny/adapters")
        for (limit, rows) in [(nil, 0), (64, 128), (63, 0), (LoRAManager.maxConsumerRank, 128)] as [(Int?, Int)] {
            // A fused pool widens its model's weights: a model each.
            let model = try LlamaModel(directory: fixture("models/llama-tiny"), backend: CPUBackend(), maxTokens: 256, maxSequences: 8)
            var options = LoRAOptions()
            options.backend = .fused
            options.maxLorasPerBatch = 2
            if let limit { options.fusedConsumerMaxRank = limit }
            let manager = try LoRAManager(options: options, model: model, maxTokens: 256,
                                          initial: ["r64-pattern", "r8-all"].map { LoRAPathSpec(name: $0, path: "\(adapters)/\($0)") })
            #expect(manager.maxRank == 64 && manager.consumerRows == rows, "limit \(limit.map(String.init) ?? "default")")
        }
        // A pool of rank 256 never: SiLU·mul's consumer stages 2R floats of xa in 256.
        var wide = LoRAOptions()
        wide.backend = .fused
        wide.maxLorasPerBatch = 2
        wide.maxLoraRank = 256
        wide.fusedConsumerMaxRank = 256
        let model = try LlamaModel(directory: fixture("models/llama-tiny"), backend: CPUBackend(), maxTokens: 256, maxSequences: 8)
        let manager = try LoRAManager(options: wide, model: model, maxTokens: 256, initial: [LoRAPathSpec(name: "r8-all", path: "\(adapters)/r8-all")])
        #expect(manager.maxRank == 256 && manager.consumerRows == 0)
        var bad = LoRAOptions()
        bad.fusedConsumerMaxRank = -1
        #expect(throws: LoomError.self) { try bad.validate() }
    }

    /// Steps of more than `LoRAManager.stepShrunkRows` rows use one shared shrink buffer, smaller ones
    /// a zeroed buffer per layer and group: a 299-token prefill in one step must give the logits that
    /// 99 single-row decode steps after a 200-token prompt gave at the same position.
    @Test(arguments: kinds)
    func longPrefillStepMatchesDecodeSteps(kind: LoRABackendKind) throws {
        let s = try setup("stories260k", kind: kind, slots: 3)
        let ref = try s.manager.registry.resolve(["r8-all"])[0]
        let prompt = (0..<200).map { 1 + ($0 * 37) % 500 }
        var decodeLogits: [[Float]] = []
        let generated = try Generator(model: s.model).generate(
            [GenerationRequest(promptIds: prompt, maxNewTokens: 100, adapterKey: ref?.uid ?? 0)], maxAdaptersPerStep: 3,
            stepHook: { rows in try s.manager.prepare(rowAdapters: rows.map { _ in ref }, forGraph: false) },
            onLogits: { _, _, l in decodeLogits.append(l) })[0]
        var prefillLogits: [Float] = []
        let long = prompt + generated.prefix(99)
        #expect(long.count > LoRAManager.stepShrunkRows)
        let next = try Generator(model: s.model).generate(
            [GenerationRequest(promptIds: long, maxNewTokens: 1, adapterKey: ref?.uid ?? 0)], maxAdaptersPerStep: 3,
            stepHook: { rows in try s.manager.prepare(rowAdapters: rows.map { _ in ref }, forGraph: false) },
            onLogits: { _, _, l in prefillLogits = l })[0]
        let diff = maxAbsDifference(prefillLogits, decodeLogits[99])
        #expect(diff < 1e-4, "\(kind): the 299-row step's logits differ from decode's by \(diff)")
        #expect(next == [generated[99]])
    }

    /// The fused backend widens the model's q/k/v by every slot's columns (down's 172-wide input
    /// keeps shrink and expand) and says so; the other backends leave the weights alone.
    @Test func fusedWidensTheTargetedWeights() throws {
        let fused = try setup("stories260k", kind: .fused, slots: 3)
        let r = fused.manager.maxRank, config = fused.model.config
        #expect(fused.model.weights.layers[0].qkv.shape == Shape(config.qkvSize, config.hiddenSize + LoRAManager.fusedExtension(slots: 3, stack: 3, rank: r)))
        #expect(fused.model.weights.layers[0].down.shape == Shape(config.hiddenSize, config.intermediateSize))
        let summary = try #require(fused.manager.fusedSummary)
        #expect(summary.contains("qkv K +") && !summary.contains("down") && summary.contains("GiB of widened weights"), "\(summary)")
        let plain = try setup("stories260k", kind: .csgmv, slots: 3)
        #expect(plain.manager.fusedSummary == nil)
        #expect(plain.model.weights.layers[0].qkv.shape == Shape(config.qkvSize, config.hiddenSize))
        // Split extensions: gate/up's modules (equal widths) take R columns a slot each, in their own
        // copies of the input; q/k/v's (unequal) keep the shared extension.
        let split = try setup("stories260k", kind: .fused, slots: 3, fusedDecodeRows: 0, splitStacks: true)
        let gateUpK = config.hiddenSize + LoRAManager.fusedExtension(slots: 3, stack: 1, rank: r)
        #expect(split.model.weights.layers[0].gateUp.shape == Shape(2 * config.intermediateSize, gateUpK))
        #expect(split.model.weights.layers[0].qkv.shape == fused.model.weights.layers[0].qkv.shape)
        let refs = try split.manager.registry.resolve(["r8-all", nil])
        let x = try split.model.backend.allocate(Shape(refs.count, config.hiddenSize), dtype: split.model.backend.activationDType)
        let applier = try #require(try split.manager.prepare(rowAdapters: refs, forGraph: true))
        #expect(applier.gemmInput(rank: 0, layer: 0, group: .gateUp, input: x).shape == Shape(2, refs.count, gateUpK))
        #expect(applier.gemmInput(rank: 0, layer: 0, group: .qkv, input: x).shape.rank == 2)
    }

    /// A fused step on the widened K that no graph replays gives its GEMMs the columns up to its last
    /// adapted slot; a graph step keeps every slot's (the goldens above check both give PEFT's logits).
    @Test func eagerFusedStepsCutTheWidenedKAfterTheirLastSlot() throws {
        let s = try setup("stories260k", kind: .fused, slots: 3, fusedDecodeRows: 0)
        let r = s.manager.maxRank, hidden = s.model.config.hiddenSize
        // The adapter takes slot 0, the base rows the last slot.
        let refs = try s.manager.registry.resolve(["r8-all", nil, "r8-all"])
        let x = try s.model.backend.allocate(Shape(refs.count, hidden), dtype: s.model.backend.activationDType)
        for (forGraph, slots) in [(false, 1), (true, 3), (false, 1)] {
            let applier = try #require(try s.manager.prepare(rowAdapters: refs, forGraph: forGraph))
            let input = applier.gemmInput(rank: 0, layer: 0, group: .qkv, input: x)
            #expect(input.shape == Shape(refs.count, hidden + LoRAManager.fusedExtension(slots: slots, stack: 3, rank: r)), "forGraph \(forGraph)")
            // Its launches: the graph bounds (3 rows over 3 slots, one segment per slot), or its own
            // two segments (the adapter's 2 rows, the base's 1) and the first adapted slot.
            let plan = try #require((applier as? StepApplier)?.plans.first)
            #expect(plan.numSegments == 2)
            #expect(plan.segmentCapacity == (forGraph ? 3 : 2) && plan.maxSegmentLength == (forGraph ? 3 : 2), "forGraph \(forGraph)")
            #expect(plan.firstAdaptedSlot == 0)
        }
    }

    @Test(arguments: models, kinds)
    func mixedBatchesMatchPEFT(model name: String, kind: LoRABackendKind) throws {
        for slots in [8, 3] {
            let s = try setup(name, kind: kind, slots: slots)
            for (b, batch) in (s.reference["mixed_batches"] as! [[String: Any]]).enumerated() {
                let adapters = (batch["adapters"] as! [Any]).map { $0 as? String }
                try check(s, adapters: adapters, prompts: (batch["prompt_ids"] as! [Any]).map(ints),
                          logits: (batch["last_logits"] as! [Any]).map(floats), greedy: (batch["greedy_ids"] as! [Any]).map(ints),
                          label: "\(name) \(kind) batch \(b) slots \(slots)")
            }
        }
    }
}
