import CUDABackend
import Foundation
import LoomCore
import LoRA
import ModelFormats
import Models

/// The fused decode rows of `loom bench lora-kernels`, timed on the path the model runs. Up to
/// `--fused-decode-rows` tokens and `--fused-consumer-max-rank`, each group's GEMM computes the
/// slots' A·x in extra output rows of a tall weight and the op that reads the output (RoPE with the
/// KV write, SiLU·mul, the residual RMSNorm) adds the delta; otherwise the GEMM takes the widened K
/// beside a shrink kernel. Either way LoRA's work is inside the model's own kernels, so its time is
/// what the adapters add to a decode step of `layers` Llama-3.1-8B layers, per layer: the same step
/// of two models with the same random weights, one without adapters and one with the fused pool,
/// each captured in a CUDA graph, replayed in turn.
enum FusedDecodeSteps {
    /// Layers of each model: the adapters a step reads (8 of rank 16: 21 MB a layer) do not stay
    /// in L2 from one replay to the next, as in the 32-layer model.
    static let layers = 8
    /// A small vocabulary: the LM head, the same in both steps, adds little to either.
    static let vocabSize = 2048
    /// Every sequence's context (attention is the same in both steps).
    static let context = 128
    /// Base and LoRA replays alternate this many times; the row takes the median difference.
    static let rounds = 3

    struct Timing {
        /// What the adapters add to one layer, µs.
        var loraMicroseconds: Double
        /// Whole steps, the medians, µs.
        var baseStepMicroseconds: Double
        var loraStepMicroseconds: Double
        /// Whether the ops reading the GEMMs added the deltas (else the widened K).
        var expandsInConsumers: Bool
        /// One eager step of each, every kernel timed: µs per layer by kernel name.
        var eagerBaseKernels: [String: Double]
        var eagerLoRAKernels: [String: Double]
    }

    /// Times the decode rows `cases` (one adapter rank) with `slots` adapters of that rank in a
    /// fused pool (`fusedDecodeRows` and `consumerMaxRank` as the pool's options), `repeats` replays a figure.
    static func time(_ cases: [LoRAKernelCase], rank: Int, slots: Int, fusedDecodeRows: Int, consumerMaxRank: Int, gpu: CUDABackend,
                     shape: ModelConfig, repeats: Int) throws -> [LoRAKernelCase: Timing] {
        precondition(cases.allSatisfy { $0.phase == .decode && $0.rank == rank })
        var c = shape
        c.numLayers = layers
        c.vocabSize = vocabSize
        let maxTokens = cases.map(\.tokens).max()!
        let blockSize = 16, blocks = (context + blockSize - 1) / blockSize
        let directory = try RandomModel.write(c, folder: "\(BenchLoRAKernels.shapeName)-\(layers)-layers")
        func load() throws -> LlamaModel {
            try RandomModel.loading(on: [gpu]) {
                try LlamaModel(directory: directory, backends: [gpu], communicators: [nil], maxTokens: maxTokens, maxSequences: maxTokens,
                               maxBlocksPerSequence: blocks, blockSize: blockSize)
            }
        }
        let base = try load(), fused = try load()
        let cache = try KVCache(model: base, numBlocks: maxTokens * blocks, blockSize: blockSize)
        let files = try SyntheticAdapters.write(base: c, baseName: "\(BenchLoRAKernels.shapeName) (\(layers) layers)", count: slots, rank: rank)
        defer { files.remove() }
        var options = try SyntheticAdapters.poolOptions(slots: slots, rank: rank, backend: "fused", chunkSize: 16)
        options.fusedDecodeRows = fusedDecodeRows
        options.fusedConsumerMaxRank = consumerMaxRank
        let manager = try LoRAManager(options: options, model: fused, maxTokens: maxTokens, initial: files.specs)
        let refs = try manager.registry.resolve(files.specs.map(\.name)).map { $0! }
        let ids = try gpu.allocate(Shape(maxTokens), dtype: .i32)

        var timings: [LoRAKernelCase: Timing] = [:]
        for kernelCase in cases {
            let n = kernelCase.tokens
            var step = ForwardBatch()
            var rng = OpChecks.SplitMix(seed: UInt64(n))
            for s in 0..<n {
                step.append(tokens: [Int32(rng.int(vocabSize))], startPosition: context - 1,
                            blockTable: (0..<blocks).map { Int32(s * blocks + $0) }, blockSize: blockSize)
            }
            // The plan goes into the pool's buffers outside the graph; the first use of an adapter copies it into its slot.
            guard let applier = try manager.prepare(rowAdapters: kernelCase.rowAdapters.map { refs[$0] }) else {
                preconditionFailure("every row names an adapter")
            }
            let expandsInConsumers = applier.consumerLoRA(rank: 0, layer: 0, group: .qkv) != nil
            let baseBody = { gpu.argmax(base.forward(step, cache: cache, lora: nil), out: ids.rows(n)) }
            let loraBody = { gpu.argmax(fused.forward(step, cache: cache, lora: applier), out: ids.rows(n)) }
            let key = "lora-kernels-fused-decode-r\(rank)-t\(n)-a\(kernelCase.adapters)-\(expandsInConsumers ? "consumers" : "widened")"
            var baseSteps: [Double] = [], loraSteps: [Double] = [], differences: [Double] = []
            for _ in 0..<rounds {
                let b = gpu.replayMicroseconds(key: key + "-base", repeats: repeats, baseBody)
                let l = gpu.replayMicroseconds(key: key + "-lora", repeats: repeats, loraBody)
                baseSteps.append(b)
                loraSteps.append(l)
                differences.append(l - b)
            }
            timings[kernelCase] = Timing(
                loraMicroseconds: median(differences) / Double(layers), baseStepMicroseconds: median(baseSteps),
                loraStepMicroseconds: median(loraSteps), expandsInConsumers: expandsInConsumers,
                eagerBaseKernels: eagerKernels(gpu, baseBody), eagerLoRAKernels: eagerKernels(gpu, loraBody))
        }
        gpu.synchronize()
        return timings
    }

    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    /// One eager run of `body` with every launch timed: µs per layer by kernel name.
    static func eagerKernels(_ gpu: CUDABackend, _ body: () -> Void) -> [String: Double] {
        body()
        return gpu.profileLaunches(body).mapValues { ($0.milliseconds * 1000 / Double(layers) * 10).rounded() / 10 }
    }
}

extension CUDABackend {
    /// Microseconds per replay of `body` captured once in a CUDA graph: one eager run first (GEMM
    /// algorithms are chosen outside a capture), the capture, `warmups` replays, then `repeats`
    /// replays between two events.
    func replayMicroseconds(key: String, repeats: Int, warmups: Int = 10, _ body: () -> Void) -> Double {
        body()
        synchronize()
        for _ in 0...warmups { withGraph(key: key, body) }
        synchronize()
        let ms = timeMilliseconds {
            for _ in 0..<repeats { withGraph(key: key, body) }
        }
        return ms * 1000 / Double(repeats)
    }
}
