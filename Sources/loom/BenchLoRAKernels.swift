import ArgumentParser
import CUDABackend
import Foundation
import LoomCore
import LoRA
import ModelFormats
import Models

/// `loom bench lora-kernels`: the LoRA work of one Llama-3.1-8B layer (q, k, v, o, gate, up, down
/// targeted) against the layer's base GEMMs, row by row of the issue's table, beside the floor of
/// the adapter bytes the step must read and SGLang's published figures.
///
/// Each side is captured once in a CUDA graph and replayed (SGLang's method): the figures are
/// device time per replay, without launch overhead. Replays read the same adapters again, so a
/// step whose adapters fit in L2 can beat the HBM floor.
///
/// Fused LoRA has no kernel of its own at decode in the model (the GEMM shrinks and the op reading
/// its output expands, or the GEMM expands on the widened K beside a shrink), so a fused decode
/// row's LoRA time is what the adapters add to whole decode steps (`FusedDecodeSteps`). Fused
/// prefill rows time the GEMM on the widened weight and input, less the base GEMM.
struct BenchLoRAKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-kernels",
        abstract: "One layer's LoRA kernels against its base GEMMs on Llama-3.1-8B shapes, beside SGLang's figures.")

    @Option(help: "LoRA kernels: csgmv, sgmv, triton (an alias of sgmv), fused, or all (csgmv, sgmv and fused).")
    var loraBackend = "all"

    @Option(help: "Most tokens per segment with csgmv.")
    var maxLoraChunkSize = 16

    @Option(help: "Rows phase:rank:tokens:adapters, comma-separated, e.g. decode:16:32:8,prefill:64:2048:4 (default: the issue's table).")
    var rows: String?

    @Option(help: "With fused: decode steps of at most this many tokens add the deltas in the ops reading the GEMMs (0: every step takes the widened K).")
    var fusedDecodeRows = LoRAOptions().fusedDecodeRows

    @Option(help: "With fused: the largest pool rank whose decode steps add the deltas in the ops reading the GEMMs (at most \(LoRAManager.maxConsumerRank)).")
    var fusedConsumerMaxRank = LoRAOptions().fusedConsumerMaxRank

    @Option(help: "Timed replays of each graph.")
    var repeats = 100

    @Option(help: "Also write the result object to this file.")
    var output: String?

    @Option(help: "The commit to record in the result.")
    var commit = ProcessInfo.processInfo.environment["LOOM_COMMIT"] ?? "unknown"

    /// The shape whose one layer is timed.
    static let shapeName = "llama-3.1-8b"
    /// Fused prefill rows: base and widened replays in turn this many times (3 before session 29,
    /// whose rank-64 row then read 130.7 to 148.6 µs over six runs of one binary or two).
    static let fusedRounds = 7

    mutating func validate() throws {
        do {
            _ = try backends()
            _ = try cases()
            for b in try backends() { _ = try SyntheticAdapters.poolOptions(slots: LoRAKernelCase.poolSlots(try cases()), rank: 1, backend: b, chunkSize: maxLoraChunkSize) }
        } catch let e as LoomError {
            throw ValidationError(e.description)
        }
        if repeats < 1 { throw ValidationError("--repeats must be at least 1") }
        if fusedDecodeRows < 0 { throw ValidationError("--fused-decode-rows must be at least 0") }
        if !(0...LoRAManager.maxConsumerRank).contains(fusedConsumerMaxRank) {
            throw ValidationError("--fused-consumer-max-rank must be between 0 and \(LoRAManager.maxConsumerRank)")
        }
    }

    /// `--lora-backend`, `all` spelled out (triton is sgmv's alias: it would time the same kernels).
    func backends() throws -> [String] {
        if loraBackend == "all" { return ["csgmv", "sgmv", "fused"] }
        _ = try LoRABackendKind(flag: loraBackend)
        return [loraBackend]
    }

    func cases() throws -> [LoRAKernelCase] {
        try rows.map(LoRAKernelCase.parse) ?? LoRAKernelCase.issueMatrix
    }

    func run() throws {
        let cases = try cases(), backends = try backends()
        let gpu = try CUDABackend(device: 0)
        let bandwidth = try gpu.measureCopyBandwidth()
        benchLog(String(format: "%@: copy bandwidth %.0f GB/s (read + write)", gpu.deviceName, bandwidth / 1e9))
        var shape = try ModelConfig.named(Self.shapeName)
        shape.numLayers = 1
        let maxTokens = cases.map(\.tokens).max()!
        let slots = LoRAKernelCase.poolSlots(cases)
        let layer = try LoRAKernelLayer(gpu: gpu, config: shape, maxTokens: maxTokens)

        // Fused decode rows in whole decode steps, rank by rank (a model pair at a time).
        var fusedDecode: [LoRAKernelCase: FusedDecodeSteps.Timing] = [:]
        if backends.contains("fused") {
            let stepCases = cases.filter { $0.phase == .decode }
            for rank in Set(stepCases.map(\.rank)).sorted() {
                let timings = try FusedDecodeSteps.time(stepCases.filter { $0.rank == rank }, rank: rank, slots: slots, fusedDecodeRows: fusedDecodeRows,
                                                        consumerMaxRank: fusedConsumerMaxRank, gpu: gpu, shape: shape, repeats: repeats)
                fusedDecode.merge(timings) { $1 }
            }
        }

        // Per adapter rank: `slots` adapters on disk and in host memory (the CPU check); per backend and rank: a
        // pool. Pools live to the end, as captured graphs point at their buffers.
        var files: [Int: SyntheticAdapters] = [:]
        var hostAdapters: [Int: [PEFTAdapter]] = [:]
        var pools: [String: (manager: LoRAManager, fused: LoRAKernelLayer.FusedProjections?)] = [:]
        defer { for f in files.values { f.remove() } }
        func pool(_ backend: String, rank: Int) throws -> (manager: LoRAManager, fused: LoRAKernelLayer.FusedProjections?) {
            if let m = pools["\(backend)-\(rank)"] { return m }
            if files[rank] == nil {
                let f = try SyntheticAdapters.write(base: shape, baseName: "\(Self.shapeName) (one layer)", count: slots, rank: rank)
                files[rank] = f
                hostAdapters[rank] = try f.specs.map { try PEFTAdapter.load(path: $0.path, base: shape) }
            }
            // A fused pool widens its own copy of the layer's weights, and every step takes the widened
            // K, as the model does for steps of more than --fused-decode-rows rows (the issue's prefill
            // rows, the only fused rows timed here).
            let fused = backend == "fused" ? try LoRAKernelLayer.FusedProjections(copying: layer) : nil
            var options = try SyntheticAdapters.poolOptions(slots: slots, rank: rank, backend: backend, chunkSize: maxLoraChunkSize)
            options.fusedDecodeRows = 0
            let m = try LoRAManager(options: options, base: shape, backends: [gpu], communicators: [nil],
                                    maxTokens: maxTokens, initial: files[rank]!.specs, weights: fused)
            pools["\(backend)-\(rank)"] = (m, fused)
            return (m, fused)
        }

        var results: [[String: Any]] = []
        for c in cases {
            for backend in backends {
                let baseKey = "lora-kernels-base-t\(c.tokens)"
                let baseMicroseconds = gpu.replayMicroseconds(key: baseKey, repeats: repeats) { layer.base(tokens: c.tokens) }
                if backend == "fused", let t = fusedDecode[c] {
                    var row = Self.row(c, backend: backend, baseMicroseconds: baseMicroseconds, loraMicroseconds: t.loraMicroseconds,
                                       adapterBytes: c.adapterBytes(shape), bandwidth: bandwidth, check: nil)
                    row["lora_timing"] = "decode steps of \(FusedDecodeSteps.layers) layers with and without the adapters, per layer ("
                        + (t.expandsInConsumers ? "deltas added by the ops reading the GEMMs)" : "GEMMs on the widened K)")
                    row["base_step_us"] = t.baseStepMicroseconds
                    row["lora_step_us"] = t.loraStepMicroseconds
                    row["eager_kernels_us"] = t.eagerLoRAKernels
                    row["eager_base_kernels_us"] = t.eagerBaseKernels
                    results.append(row)
                    benchLog(Self.tableLine(row))
                    continue
                }
                let (manager, fused) = try pool(backend, rank: c.rank)
                let refs = try manager.registry.resolve(files[c.rank]!.specs.map(\.name)).map { $0! }
                let rowAdapters = c.rowAdapters
                // Outside any graph: the plan goes into the pool's persistent buffers, the first use
                // of an adapter copies its weights into a slot. A prefill row's graph replays its own
                // plan only, so its widened GEMMs stop after the last adapted slot, as the engine's do.
                guard let applier = try manager.prepare(rowAdapters: rowAdapters.map { refs[$0] }, forGraph: c.phase == .decode) else {
                    preconditionFailure("every row names an adapter")
                }
                if fused != nil { layer.placeInputs(applier, tokens: c.tokens) }
                let check = layer.check(applier, rowAdapters: rowAdapters, adapters: hostAdapters[c.rank]!, fused: fused)
                let loraKey = "lora-kernels-\(backend)-\(c.phase.rawValue)-r\(c.rank)-t\(c.tokens)-a\(c.adapters)-chunk\(maxLoraChunkSize)"
                let replayLoRA = { gpu.replayMicroseconds(key: loraKey, repeats: repeats) { layer.lora(applier, tokens: c.tokens, fused: fused) } }
                let loraReplay = replayLoRA()
                // Fused: the replay ran the widened GEMMs, base included; LoRA's share is what they add,
                // a few per cent of them. Base and widened are replayed in turn `fusedRounds` times; the
                // row takes the median difference and the median base (a prefill's GEMMs run at the clocks
                // of the moment: a few per cent apart over a run, as much as LoRA's share).
                var bases = [baseMicroseconds], differences = [loraReplay - baseMicroseconds]
                if fused != nil {
                    for _ in 1..<Self.fusedRounds {
                        let base = gpu.replayMicroseconds(key: baseKey, repeats: repeats) { layer.base(tokens: c.tokens) }
                        bases.append(base)
                        differences.append(replayLoRA() - base)
                    }
                }
                let loraMicroseconds = fused == nil ? loraReplay : differences.sorted()[differences.count / 2]
                var row = Self.row(c, backend: backend, baseMicroseconds: bases.sorted()[bases.count / 2], loraMicroseconds: loraMicroseconds,
                                   adapterBytes: c.adapterBytes(shape), bandwidth: bandwidth, check: check)
                row["lora_timing"] = fused == nil ? "the LoRA kernels of one layer"
                    : "one layer's GEMMs on the widened weights, less the base GEMMs (medians of \(Self.fusedRounds), replayed in turn)"
                // Where the LoRA time goes: each group's launches run eagerly, each timed alone (a
                // second run, warm; eager launches cost a few µs more than graph replays).
                var kernels: [String: Double] = [:]
                for g in ProjectionGroup.allCases {
                    layer.lora(applier, group: g, tokens: c.tokens, fused: fused)
                    for (name, t) in gpu.profileLaunches({ layer.lora(applier, group: g, tokens: c.tokens, fused: fused) }) {
                        kernels["\(g) \(name)"] = (t.milliseconds * 1000).rounded()
                    }
                }
                row["eager_kernels_us"] = kernels
                benchLog("\(c.phase.rawValue) r\(c.rank) t\(c.tokens) a\(c.adapters) \(backend): " + kernels.sorted { $0.key < $1.key }.map { "\($0.key) \(Int($0.value))" }.joined(separator: ", "))
                if row["check_passed"] as? Bool == false {
                    benchLog("\(c) \(backend): the LoRA delta differs from the CPU reference (max error \(check.maxError), largest value \(check.maxReference))")
                }
                results.append(row)
                benchLog(Self.tableLine(row))
            }
        }
        let result: [String: Any] = [
            "bench": "lora-kernels", "command": CommandLine.arguments.joined(separator: " "), "commit": commit, "gpu": gpu.deviceName,
            "date": ISO8601DateFormatter().string(from: Date()), "hbm_copy_bandwidth_gb_s": bandwidth / 1e9, "environment": gpu.environment,
            "shape": Self.shapeName, "max_lora_chunk_size": maxLoraChunkSize, "fused_decode_rows": fusedDecodeRows,
            "fused_consumer_max_rank": fusedConsumerMaxRank, "repeats": repeats, "rows": results,
        ]
        benchLog("\n" + Self.tableHeader + "\n" + results.map(Self.tableLine).joined(separator: "\n"))
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .prettyPrinted])
        if let output { try data.write(to: URL(fileURLWithPath: output)) }
        print(String(decoding: data, as: UTF8.self))
    }

    /// A result row: the measurement, its floor (`adapterBytes` over `bandwidth` bytes/s), and
    /// SGLang's figures and the goal when the issue's table has the row.
    static func row(_ c: LoRAKernelCase, backend: String, baseMicroseconds: Double, loraMicroseconds: Double, adapterBytes: Int,
                    bandwidth: Double, check: (maxError: Float, maxReference: Float)?) -> [String: Any] {
        let ratio = loraMicroseconds / baseMicroseconds
        let floorMicroseconds = Double(adapterBytes) / bandwidth * 1e6
        let reference = c.reference
        var row: [String: Any] = [
            "phase": c.phase.rawValue, "rank": c.rank, "tokens": c.tokens, "adapters": c.adapters, "backend": backend,
            "sequence_length": c.phase == .prefill ? c.sequenceLength as Any : NSNull(),
            "base_us": baseMicroseconds, "lora_us": loraMicroseconds, "ratio": ratio,
            "floor_us": floorMicroseconds, "floor_ratio": floorMicroseconds / baseMicroseconds, "adapter_bytes": adapterBytes,
            "goal_ratio": reference.map { $0.goalRatio as Any } ?? NSNull(),
            "meets_goal": reference.map { (ratio <= $0.goalRatio) as Any } ?? NSNull(),
            "sglang_base_us": reference.map { $0.baseMicroseconds as Any } ?? NSNull(),
            "sglang_csgmv_us": reference.map { $0.csgmvMicroseconds as Any } ?? NSNull(),
            "sglang_triton_us": reference.map { $0.tritonMicroseconds as Any } ?? NSNull(),
        ]
        if let check {
            // bf16 operands, the rank-r intermediate and the output each rounded once: 2 % of the largest value.
            row["check_max_abs_error"] = Double(check.maxError)
            row["check_passed"] = check.maxError <= 0.02 * max(check.maxReference, 1e-3)
        }
        return row
    }

    static let tableHeader: String = {
        func right(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
        return ["phase   ", right("rank", 4), right("tokens", 6), right("adapters", 8), "backend", right("base_us", 8), right("lora_us", 8),
                right("ratio", 6), right("floor_us", 9), right("floor_ratio", 11), right("goal", 5), "meets", "SGLang csgmv / triton µs (ratio)"]
            .joined(separator: " ")
    }()

    /// One line of the human table.
    static func tableLine(_ row: [String: Any]) -> String {
        func number(_ key: String, _ format: String) -> String {
            (row[key] as? Double).map { String(format: format, $0) } ?? "-"
        }
        let meets = (row["meets_goal"] as? Bool).map { $0 ? "yes" : "NO" } ?? "-"
        var sglang = "-"
        if let base = row["sglang_base_us"] as? Double, let csgmv = row["sglang_csgmv_us"] as? Double, let triton = row["sglang_triton_us"] as? Double {
            sglang = String(format: "%.0f / %.0f (%.2f / %.2f)", csgmv, triton, csgmv / base, triton / base)
        }
        return [
            (row["phase"] as! String).padding(toLength: 8, withPad: " ", startingAt: 0),
            String(format: "%4d %6d %8d", row["rank"] as! Int, row["tokens"] as! Int, row["adapters"] as! Int),
            (row["backend"] as! String).padding(toLength: 7, withPad: " ", startingAt: 0),
            number("base_us", "%8.1f"), number("lora_us", "%8.1f"), number("ratio", "%6.3f"), number("floor_us", "%9.2f"),
            number("floor_ratio", "%11.4f"), number("goal_ratio", "%5.2f"), meets.padding(toLength: 5, withPad: " ", startingAt: 0), sglang,
        ].joined(separator: " ")
    }
}
