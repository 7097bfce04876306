import CPUBackend
import Foundation
import LoomCore
import LoRA
import Models
import Testing

/// Tensor parallelism on the CPU: ranks are threads joined by `CPUCommunicator`, and a model split
/// 2 or 4 ways with mixed adapters (S-LoRA sharding) gives the same logits (1e-4) and greedy
/// tokens as the unsplit model and as PEFT.
@Suite struct TensorParallelTests {
    static let configurations: [(String, Int)] = [
        ("stories260k", 2), ("stories260k", 4), ("llama-tiny", 2), ("llama-tiny", 4),
        ("mistral-tiny", 2), ("mistral-tiny", 4), ("qwen2-tiny", 2),
    ]

    func run(_ name: String, tp: Int, kind: LoRABackendKind = .csgmv) throws -> (logits: [[Float]], tokens: [[Int]], reference: [String: Any]) {
        let reference = try loadJSON(fixture("models/\(name)/reference.json"))
        let modelDir = packageRoot.appendingPathComponent(reference["model_dir"] as! String).path
        let backends: [ComputeBackend] = (0..<tp).map { _ in CPUBackend() }
        let communicators: [Communicator?] = tp == 1 ? [nil] : CPUCommunicator.group(size: tp)
        let model = try LlamaModel(directory: modelDir, backends: backends, communicators: communicators, maxTokens: 512, maxSequences: 16)
        #expect(model.tensorParallelSize == tp)
        let adapterDir = fixture("models/\(name)/adapters")
        let names = try FileManager.default.contentsOfDirectory(atPath: adapterDir).sorted()
        var options = LoRAOptions()
        options.maxLorasPerBatch = 8
        options.backend = kind
        let manager = try LoRAManager(options: options, model: model, maxTokens: 512,
                                      initial: names.map { LoRAPathSpec(name: $0, path: "\(adapterDir)/\($0)") })
        let batch = (reference["mixed_batches"] as! [[String: Any]])[0]
        let adapters = (batch["adapters"] as! [Any]).map { $0 as? String }
        let refs = try manager.registry.resolve(adapters)
        let prompts = (batch["prompt_ids"] as! [Any]).map(ints)
        var first = [[Float]](repeating: [], count: prompts.count)
        let tokens = try Generator(model: model).generate(
            zip(prompts, refs).map { GenerationRequest(promptIds: $0, maxNewTokens: 32, adapterKey: $1?.uid ?? 0) },
            stepHook: { rows in try manager.prepare(rowAdapters: rows.map { refs[$0] }, forGraph: false) },
            onLogits: { s, step, l in if step == 0 { first[s] = l } })
        return (first, tokens, batch)
    }

    @Test(arguments: configurations)
    func shardedModelWithMixedAdaptersMatchesUnsharded(model name: String, tp: Int) throws {
        let whole = try run(name, tp: 1)
        let split = try run(name, tp: tp)
        let expected = (whole.reference["greedy_ids"] as! [Any]).map(ints)
        for i in whole.logits.indices {
            let diff = maxAbsDifference(split.logits[i], whole.logits[i])
            #expect(diff < 1e-4, "\(name) tp \(tp) row \(i): logits differ by \(diff)")
            #expect(split.tokens[i] == whole.tokens[i], "\(name) tp \(tp) row \(i)")
            #expect(split.tokens[i] == expected[i], "\(name) tp \(tp) row \(i) against PEFT")
        }
    }

    /// The fused backend split 2 ways: q/k/v and gate/up fused on each rank, o and down (row-parallel)
    /// through shrink, all-reduce and expand; against the unsplit fused model and PEFT.
    @Test(arguments: [("stories260k", 2), ("llama-tiny", 2), ("qwen2-tiny", 2)])
    func fusedShardedModelMatchesUnsharded(model name: String, tp: Int) throws {
        let whole = try run(name, tp: 1, kind: .fused)
        let split = try run(name, tp: tp, kind: .fused)
        let expected = (whole.reference["greedy_ids"] as! [Any]).map(ints)
        for i in whole.logits.indices {
            let diff = maxAbsDifference(split.logits[i], whole.logits[i])
            #expect(diff < 1e-4, "\(name) fused tp \(tp) row \(i): logits differ by \(diff)")
            #expect(split.tokens[i] == expected[i] && whole.tokens[i] == expected[i], "\(name) fused tp \(tp) row \(i) against PEFT")
        }
    }

    @Test func sizesThatDoNotDivideAreRefused() throws {
        let config = try ModelConfig.load(directory: fixture("models/qwen2-tiny"))
        #expect(throws: LoomError.invalidArgument("--tp-size 4 must divide the number of attention heads (6)")) {
            try TensorShard.validate(config, size: 4)
        }
        let stories = try ModelConfig.load(directory: fixture("stories260k"))
        #expect(throws: LoomError.invalidArgument("--tp-size 3 must divide the number of attention heads (8)")) {
            try TensorShard.validate(stories, size: 3)
        }
    }

    @Test func allReduceAndAllGatherAcrossThreads() throws {
        let size = 3
        let comms = CPUCommunicator.group(size: size)
        let backend = CPUBackend()
        let tensors = try (0..<size).map { r -> DeviceTensor in
            let t = try backend.allocate(Shape(2, 5), dtype: .f32)
            backend.copy((0..<10).map { Float($0 * (r + 1)) }, to: t)
            return t
        }
        let gathered = try (0..<size).map { _ in try backend.allocate(Shape(2, 14), dtype: .f32) }
        let group = DispatchGroup()
        for r in 0..<size {
            let thread = Thread {
                comms[r].allGather(tensors[r], out: gathered[r])
                comms[r].allReduceSum(tensors[r])
                group.leave()
            }
            group.enter()
            thread.start()
        }
        group.wait()
        for r in 0..<size {
            #expect(backend.download(tensors[r]) == (0..<10).map { Float($0 * 6) })
            let g = backend.download(gathered[r])
            #expect(Array(g[0..<5]) == [0, 1, 2, 3, 4])
            #expect(Array(g[5..<10]) == [0, 2, 4, 6, 8])
            #expect(Array(g[10..<14]) == [0, 3, 6, 9], "the last rank's columns past the width are dropped")
        }
    }
}
