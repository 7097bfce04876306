import Foundation
import LoomCore
import ModelFormats
import Testing

@testable import loom

/// The CPU side of `loom bench lora-kernels` and `loom bench decode --adapters`: the row matrix,
/// which adapter each token row uses, the floors, the reference table and the options.
@Suite struct BenchLoRATests {
    @Test func defaultMatrixIsTheIssueTable() {
        let m = LoRAKernelCase.issueMatrix
        #expect(m.map(\.description) == [
            "decode r16 t1 a1", "decode r16 t32 a8", "decode r16 t256 a8", "prefill r16 t2048 a4",
            "decode r64 t32 a8", "decode r64 t256 a8", "prefill r64 t2048 a4",
        ])
        #expect(m.map { $0.reference!.baseMicroseconds } == [114, 122, 197, 1293, 122, 198, 1290])
        #expect(m.map { $0.reference!.csgmvMicroseconds } == [74, 88, 185, 800, 153, 285, 1590])
        #expect(m.map { $0.reference!.tritonMicroseconds } == [61, 72, 106, 325, 143, 210, 1164])
        #expect(m.map { $0.reference!.goalRatio } == [0.10, 0.08, 0.08, 0.05, 0.25, 0.25, 0.12])
    }

    @Test func customRowsParseAndBadOnesAreRefused() throws {
        let rows = try LoRAKernelCase.parse("decode:16:32:8, prefill:64:2048:4,decode:8:7:3")
        #expect(rows == [
            LoRAKernelCase(phase: .decode, rank: 16, tokens: 32, adapters: 8),
            LoRAKernelCase(phase: .prefill, rank: 64, tokens: 2048, adapters: 4),
            LoRAKernelCase(phase: .decode, rank: 8, tokens: 7, adapters: 3),
        ])
        #expect(rows[0].reference != nil && rows[2].reference == nil)
        // A prefill row may name its sequence length; the issue's rows keep 512 (and their reference).
        let short = try LoRAKernelCase.parse("prefill:16:512:4:128")
        #expect(short == [LoRAKernelCase(phase: .prefill, rank: 16, tokens: 512, adapters: 4, sequenceLength: 128)])
        #expect(short[0].rowAdapters == (0..<4).flatMap { Array(repeating: $0, count: 128) })
        #expect(try LoRAKernelCase.parse("prefill:16:2048:4:512")[0].reference != nil)
        for bad in ["", "decode:16:32", "verify:16:32:8", "decode:16:x:8", "decode:0:32:8", "decode:16:32:257", "decode:16:32:0",
                    "decode:16:32:8:4", "prefill:16:512:4:0", "prefill:16:512:4:x"] {
            #expect(throws: LoomError.self, "\(bad)") { try LoRAKernelCase.parse(bad) }
        }
        // The pool has as many slots as the largest row asks, at least the issue's 8.
        #expect(LoRAKernelCase.poolSlots(rows) == 8)
        #expect(LoRAKernelCase.poolSlots(try LoRAKernelCase.parse("decode:32:160:64,decode:16:32:8")) == 64)
    }

    @Test func decodeTokensCycleAndPrefillSequencesAreContiguous() {
        let decode = LoRAKernelCase(phase: .decode, rank: 16, tokens: 32, adapters: 8)
        #expect(decode.rowAdapters == (0..<32).map { $0 % 8 })
        #expect(decode.distinctAdapters == 8)
        #expect(LoRAKernelCase(phase: .decode, rank: 16, tokens: 3, adapters: 8).distinctAdapters == 3)
        let prefill = LoRAKernelCase(phase: .prefill, rank: 16, tokens: 2048, adapters: 4)
        #expect(prefill.rowAdapters == (0..<4).flatMap { Array(repeating: $0, count: 512) })
        #expect(prefill.distinctAdapters == 4)
        #expect(DecodeLoRA.rowAdapters(sequences: 2..<5, rowsPerSequence: 2, adapters: 2) == [0, 0, 1, 1, 0, 0])
        #expect(DecodeLoRA.rowAdapters(sequences: 0..<10, rowsPerSequence: 1, adapters: 4) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    }

    @Test func floorsCountEachDistinctAdapterOnce() throws {
        var layer = try ModelConfig.named("llama-3.1-8b")
        layer.numLayers = 1
        // A: r × (4096 · 6 + 14336) inputs; B: (4096 + 1024 + 1024 + 4096 + 14336 · 2 + 4096) × r outputs; bf16.
        #expect(SyntheticAdapters.bytesPerAdapter(layer, rank: 16) == 2 * 16 * (38912 + 43008))
        #expect(LoRAKernelCase(phase: .decode, rank: 16, tokens: 32, adapters: 8).adapterBytes(layer) == 8 * 2_621_440)
        #expect(LoRAKernelCase(phase: .decode, rank: 64, tokens: 1, adapters: 1).adapterBytes(layer) == 4 * 2_621_440)
        // A tensor-parallel rank reads its share: column-parallel groups keep A whole, o and down keep B whole.
        let full = try ModelConfig.named("llama-3.1-8b")
        let half = TensorShard(rank: 0, size: 2).localConfig(full)
        #expect(SyntheticAdapters.bytesPerAdapter(full, rank: 16) == 32 * 2_621_440)
        #expect(SyntheticAdapters.bytesPerAdapter(half, rank: 16) == 32 * 2 * 16 * (4096 * 5 + 2048 + 7168 + 2048 + 512 * 2 + 7168 * 2 + 4096 * 2))
    }

    @Test func resultRowsCarryTheFloorAndSGLangFigures() {
        let c = LoRAKernelCase.issueMatrix[1]
        let row = BenchLoRAKernels.row(c, backend: "csgmv", baseMicroseconds: 100, loraMicroseconds: 7, adapterBytes: 4_000_000,
                                       bandwidth: 4e12, check: (maxError: 0.001, maxReference: 1))
        #expect(row["ratio"] as? Double == 0.07)
        #expect(row["floor_us"] as? Double == 1)
        #expect(row["floor_ratio"] as? Double == 0.01)
        #expect(row["goal_ratio"] as? Double == 0.08 && row["meets_goal"] as? Bool == true)
        #expect(row["sglang_csgmv_us"] as? Double == 88 && row["sglang_triton_us"] as? Double == 72)
        #expect(row["check_passed"] as? Bool == true)
        let slow = BenchLoRAKernels.row(c, backend: "sgmv", baseMicroseconds: 100, loraMicroseconds: 9, adapterBytes: 0, bandwidth: 4e12,
                                        check: (maxError: 0.5, maxReference: 1))
        #expect(slow["meets_goal"] as? Bool == false && slow["check_passed"] as? Bool == false)
        let custom = BenchLoRAKernels.row(LoRAKernelCase(phase: .decode, rank: 8, tokens: 4, adapters: 2), backend: "csgmv",
                                          baseMicroseconds: 50, loraMicroseconds: 5, adapterBytes: 0, bandwidth: 4e12, check: nil)
        #expect(custom["goal_ratio"] is NSNull && custom["meets_goal"] is NSNull && custom["sglang_csgmv_us"] is NSNull)
        #expect(JSONSerialization.isValidJSONObject(custom) && JSONSerialization.isValidJSONObject(row))
        let line = BenchLoRAKernels.tableLine(row), header = BenchLoRAKernels.tableHeader
        #expect(line.contains("88 / 72 (0.72 / 0.59)"))
        // Columns line up: "meets" heads the yes / NO column.
        #expect(line.distance(from: line.startIndex, to: line.range(of: "yes")!.lowerBound)
            == header.distance(from: header.startIndex, to: header.range(of: "meets")!.lowerBound), "\(header)\n\(line)")
    }

    @Test func gemmTuningNeedsOneGPUAndGraphs() throws {
        _ = try BenchDecode.parse(["--random-weights", "llama-3.1-8b", "--tune-gemms"])
        for flags in [["--tp-size", "2"], ["--eager-only"]] {
            #expect(throws: (any Error).self, "\(flags)") { try BenchDecode.parse(["--random-weights", "llama-3.1-8b", "--tune-gemms"] + flags) }
            _ = try BenchDecode.parse(["--random-weights", "llama-3.1-8b"] + flags)
        }
    }

    @Test func allBackendsMeansCSGMVSGMVAndFused() throws {
        var bench = try BenchLoRAKernels.parse([])
        #expect(try bench.backends() == ["csgmv", "sgmv", "fused"])
        #expect(try bench.cases() == LoRAKernelCase.issueMatrix)
        bench = try BenchLoRAKernels.parse(["--lora-backend", "triton", "--rows", "decode:16:1:1"])
        #expect(try bench.backends() == ["triton"] && bench.repeats == 100)
        #expect(throws: (any Error).self) { try BenchLoRAKernels.parse(["--lora-backend", "punica"]) }
        #expect(throws: (any Error).self) { try BenchDecode.parse(["--random-weights", "llama-3.1-8b", "--adapters", "2", "--lora-backend", "punica"]) }
        let decode = try BenchDecode.parse(["--random-weights", "llama-3.1-8b", "--adapters", "4"])
        #expect(decode.adapters == 4 && decode.rank == 16 && decode.loraBackend == "csgmv" && decode.maxLoraChunkSize == 16)
        let o = try SyntheticAdapters.poolOptions(slots: 4, rank: 16, backend: "triton", chunkSize: 32)
        #expect(o.maxLorasPerBatch == 4 && o.maxLoraRank == 16 && o.backend == .sgmv && o.targetModules == Set(TargetModule.allCases))
    }

    @Test func fusedPathOptionsDefaultToTheServersAndAreChecked() throws {
        let bench = try BenchLoRAKernels.parse([])
        #expect(bench.fusedDecodeRows == 128 && bench.fusedConsumerMaxRank == 16)
        for bad in [["--fused-decode-rows", "-1"], ["--fused-consumer-max-rank", "129"], ["--fused-consumer-max-rank", "-1"]] {
            #expect(throws: (any Error).self, "\(bad)") { try BenchLoRAKernels.parse(bad) }
        }
        let decode = try BenchDecode.parse(["--random-weights", "llama-3.1-8b", "--fused-consumer-max-rank", "64"])
        #expect(decode.fusedConsumerMaxRank == 64)
        #expect(throws: (any Error).self) { try BenchDecode.parse(["--random-weights", "llama-3.1-8b", "--fused-consumer-max-rank", "256"]) }
    }

    @Test func randomModelOfAnEditedShapeReadsBackAsThatShape() throws {
        var shape = try ModelConfig.named("llama-3.1-8b")
        shape.numLayers = FusedDecodeSteps.layers
        shape.vocabSize = FusedDecodeSteps.vocabSize
        let directory = try RandomModel.write(shape, folder: "test-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let read = try ModelConfig.load(directory: directory)
        #expect(read.numLayers == 8 && read.vocabSize == 2048 && read.hiddenSize == 4096 && read.intermediateSize == 14336)
        #expect(read.ropeScaling == shape.ropeScaling && read.numKVHeads == 8)
    }

    @Test func syntheticAdaptersLoadWithEveryProjection() throws {
        var shape = try ModelConfig.named("llama-3.2-1b")
        shape.numLayers = 2
        shape.hiddenSize = 64
        shape.intermediateSize = 96
        shape.numHeads = 4
        shape.numKVHeads = 2
        shape.headDim = 16
        let adapters = try SyntheticAdapters.write(base: shape, baseName: "tiny", count: 3, rank: 4)
        defer { adapters.remove() }
        #expect(adapters.specs.map(\.name) == ["adapter-0", "adapter-1", "adapter-2"])
        for spec in adapters.specs {
            let a = try PEFTAdapter.load(path: spec.path, base: shape)
            #expect(a.maxRank == 4 && a.targetModules == Set(TargetModule.allCases))
            #expect(a.byteCount / 2 == SyntheticAdapters.bytesPerAdapter(shape, rank: 4), "f32 in memory, bf16 on the device")
        }
        #expect(FileManager.default.fileExists(atPath: adapters.directory))
    }

    @Test func cpuReferenceDeltaIsScalingTimesBTimesAX() {
        // A x = [1 + 2·3, 2] = [7, 2]; B (A x) = [9, 4, 21, 5]; · 0.5.
        let delta = LoRAKernelLayer.delta(a: [1, 0, 2, 0, 1, 0], b: [1, 1, 0, 2, 3, 0, 1, -1], rank: 2, scaling: 0.5, input: [1, 2, 3])
        #expect(delta == [4.5, 2, 10.5, 2.5])
    }
}
