import CUDABackend
import Foundation
import LoomCore
import LoRA
import ModelFormats
import Models

/// One decoder layer's four base projections (random bf16 weights made on the GPU) and the
/// activations around them, `maxTokens` rows each: what `loom bench lora-kernels` times.
final class LoRAKernelLayer {
    let gpu: CUDABackend
    /// Base weights `[out, in]`: qkv `[q + 2·kv, hidden]`, o `[hidden, q]`, gate_up `[2·intermediate, hidden]`, down `[hidden, intermediate]`.
    let qkv, o, gateUp, down: DeviceTensor
    /// Activations `[maxTokens, features]`: each group's input and output.
    let hidden, qkvOut, attention, oOut, gateUpOut, activated, downOut: DeviceTensor

    init(gpu: CUDABackend, config c: ModelConfig, maxTokens n: Int) throws {
        self.gpu = gpu
        func weight(_ out: Int, _ inFeatures: Int, seed: UInt64) throws -> DeviceTensor {
            let t = try gpu.allocate(Shape(out, inFeatures), dtype: .bf16)
            gpu.fillRandom(t, seed: seed, standardDeviation: 0.02)
            return t
        }
        func activation(_ features: Int, seed: UInt64) throws -> DeviceTensor {
            let t = try gpu.allocate(Shape(n, features), dtype: .bf16)
            gpu.fillRandom(t, seed: seed, standardDeviation: 1)
            return t
        }
        qkv = try weight(c.qkvSize, c.hiddenSize, seed: 1)
        o = try weight(c.hiddenSize, c.qSize, seed: 2)
        gateUp = try weight(2 * c.intermediateSize, c.hiddenSize, seed: 3)
        down = try weight(c.hiddenSize, c.intermediateSize, seed: 4)
        hidden = try activation(c.hiddenSize, seed: 11)
        qkvOut = try activation(c.qkvSize, seed: 12)
        attention = try activation(c.qSize, seed: 13)
        oOut = try activation(c.hiddenSize, seed: 14)
        gateUpOut = try activation(2 * c.intermediateSize, seed: 15)
        activated = try activation(c.intermediateSize, seed: 16)
        downOut = try activation(c.hiddenSize, seed: 17)
        gpu.synchronize()
    }

    /// A group's base weight and its input and output at `tokens` rows.
    func operands(_ group: ProjectionGroup, tokens: Int) -> (weight: DeviceTensor, input: DeviceTensor, output: DeviceTensor) {
        switch group {
        case .qkv: (qkv, hidden.rows(tokens), qkvOut.rows(tokens))
        case .o: (o, attention.rows(tokens), oOut.rows(tokens))
        case .gateUp: (gateUp, hidden.rows(tokens), gateUpOut.rows(tokens))
        case .down: (down, activated.rows(tokens), downOut.rows(tokens))
        }
    }

    /// The layer's base GEMMs at `tokens` rows (cuBLASLt).
    func base(tokens: Int) {
        for g in ProjectionGroup.allCases {
            let x = operands(g, tokens: tokens)
            gpu.linear(x.input, weight: x.weight, bias: nil, out: x.output)
        }
    }

    /// The layer's LoRA work at `tokens` rows, as the model calls it: every group's shrink and
    /// expand; with `fused` weights (`--lora-backend fused`), every group's fused shrink and its GEMM
    /// on the widened weight, base included (the bench subtracts the base GEMMs' time).
    func lora(_ applier: LoRAApplier, tokens: Int, fused: FusedProjections? = nil) {
        for g in ProjectionGroup.allCases {
            lora(applier, group: g, tokens: tokens, fused: fused)
        }
    }

    func lora(_ applier: LoRAApplier, group g: ProjectionGroup, tokens: Int, fused: FusedProjections?) {
        let x = operands(g, tokens: tokens)
        if let fused {
            gpu.linear(gemmInput: gemmInput(applier, group: g, input: x.input), weight: fused.weights[g]!, bias: nil, out: x.output)
        }
        applier.apply(rank: 0, layer: 0, group: g, input: x.input, output: x.output)
    }

    /// Each group's input at `tokens` rows copied into the wide buffer its fused GEMM reads, where
    /// the step has one: the model's ops write their outputs there, so the copy is not LoRA's cost.
    /// Once after `prepare` (which zeroes those buffers). With split extensions the buffer is a copy
    /// for each module, all of which the model's norm writes: its second write of x (n·K bf16) is
    /// not in the bench's figures either.
    func placeInputs(_ applier: LoRAApplier, tokens: Int) {
        for g in ProjectionGroup.allCases {
            if let buffer = applier.inputBuffer(rank: 0, layer: 0, group: g) { gpu.copyColumns(operands(g, tokens: tokens).input, into: buffer, column: 0) }
        }
    }

    /// The group's fused GEMM input, as the model gets it: from its wide buffer (`placeInputs`) where it has one.
    private func gemmInput(_ applier: LoRAApplier, group g: ProjectionGroup, input: DeviceTensor) -> DeviceTensor {
        applier.gemmInput(rank: 0, layer: 0, group: g, input: applier.inputBuffer(rank: 0, layer: 0, group: g) ?? input)
    }

    /// A copy of the layer's four projections for one fused pool, which widens them.
    final class FusedProjections: ProjectionWeights {
        var weights: [ProjectionGroup: DeviceTensor] = [:]
        let tensorParallelSize = 1, numLayers = 1

        init(copying layer: LoRAKernelLayer) throws {
            for g in ProjectionGroup.allCases {
                let w = layer.operands(g, tokens: 0).weight
                let copy = try layer.gpu.allocate(w.shape, dtype: w.dtype)
                layer.gpu.copyColumns(w, into: copy, column: 0)
                weights[g] = copy
            }
        }

        func projection(rank: Int, layer: Int, group: ProjectionGroup) -> DeviceTensor { weights[group]! }
        func replaceProjection(rank: Int, layer: Int, group: ProjectionGroup, with weight: DeviceTensor) { weights[group] = weight }
    }

    /// The largest difference between the GPU's LoRA delta and a CPU reference on a few rows
    /// (the first row of each adapter and the last row), over the four groups, beside the largest
    /// reference value. Outputs are zeroed first, so the output is the delta alone.
    /// With `fused` weights, the delta is the widened GEMM's f32 output less the base GEMM's.
    func check(_ applier: LoRAApplier, rowAdapters: [Int], adapters: [PEFTAdapter], fused: FusedProjections? = nil) -> (maxError: Float, maxReference: Float) {
        var rows = Set(rowAdapters).map { rowAdapters.firstIndex(of: $0)! }.sorted()
        if rows.last != rowAdapters.count - 1 { rows.append(rowAdapters.count - 1) }
        var maxError: Float = 0, maxReference: Float = 0
        for g in ProjectionGroup.allCases {
            let x = operands(g, tokens: rowAdapters.count)
            // The delta of every row, on the host.
            let delta: [Float], width = x.output.shape.rowCount
            if let fused {
                let out = x.output.shape, base = try! gpu.allocate(out, dtype: .f32), with = try! gpu.allocate(out, dtype: .f32)
                gpu.linear(x.input, weight: x.weight, bias: nil, out: base)
                gpu.linear(gemmInput: gemmInput(applier, group: g, input: x.input), weight: fused.weights[g]!, bias: nil, out: with)
                delta = zip(gpu.download(with), gpu.download(base)).map { $0 - $1 }
            } else {
                gpu.fill(x.output, value: 0)
                applier.apply(rank: 0, layer: 0, group: g, input: x.input, output: x.output)
                delta = gpu.download(x.output)
            }
            for row in rows {
                let input = gpu.download(x.input.rows(row, 1)), got = Array(delta[(row * width)..<((row + 1) * width)])
                var expected: [Float] = []
                for m in LoRAManager.modules(of: g) {
                    let w = adapters[rowAdapters[row]].layers[0][m]!
                    expected += Self.delta(a: w.a, b: w.b, rank: w.rank, scaling: w.scaling, input: input)
                }
                maxError = max(maxError, maxAbsDifference(got, expected))
                maxReference = max(maxReference, expected.map(abs).max() ?? 0)
            }
        }
        return (maxError, maxReference)
    }

    /// `scaling · B (A x)` for one row in fp32; A is `[rank, in]`, B `[out, rank]`, row-major.
    static func delta(a: [Float], b: [Float], rank r: Int, scaling: Float, input x: [Float]) -> [Float] {
        let inFeatures = x.count, out = b.count / r
        precondition(a.count == r * inFeatures, "A of \(a.count) values for rank \(r) and \(inFeatures) inputs")
        var shrunk = [Float](repeating: 0, count: r)
        for j in 0..<r {
            var sum: Float = 0
            for k in 0..<inFeatures { sum += a[j * inFeatures + k] * x[k] }
            shrunk[j] = sum
        }
        var y = [Float](repeating: 0, count: out)
        for i in 0..<out {
            var sum: Float = 0
            for j in 0..<r { sum += b[i * r + j] * shrunk[j] }
            y[i] = scaling * sum
        }
        return y
    }

    func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "\(a.count) GPU values against \(b.count) reference values")
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }
}
