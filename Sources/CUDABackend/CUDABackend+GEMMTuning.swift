/// Choosing cuBLASLt's algorithms by the device time of whole graph steps.
extension CUDABackend {
    /// One `tuneGEMMs`: each shape's candidates with the step time under each, then the heuristic's
    /// choices and the tuned ones alternated.
    struct GEMMTuning {
        struct Shape {
            var key: CuBLASLt.PlanKey
            var candidates: [CuBLASLt.AlgorithmConfig]
            var stepMilliseconds: [Double]
            var chosen: Int
        }
        var graphKey: String
        var shapes: [Shape]
        var heuristicMilliseconds: [Double], tunedMilliseconds: [Double]
        var kept: Bool
    }

    /// Picks the cuBLASLt algorithm of each GEMM shape that `step` launches by the device time of the
    /// whole step replayed from a CUDA graph: one shape at a time, the largest weight first, every
    /// candidate the heuristic returns for it with the other shapes at their current choice. Timing
    /// a GEMM alone did not predict a step: on the H200 at batch 32 the candidates for the fused LoRA
    /// shapes timed within 1 µs of each other alone (operands evicted from L2), while steps with two
    /// of them differed by 5% (benchmarks/cuda-decode-notes.md, session 14). Then the heuristic's
    /// choices (each shape's first candidate: cuBLASLt's first, or for a widened weight its base
    /// shape's, `CuBLASLt.baseShape`) and the tuned ones alternate `confirmations` times, and the
    /// tuned ones stay only when their mean step is shorter. `step` runs one graph step (`withGraph`
    /// replays it with the same arguments); the graph of `graphKey` is captured anew for each timing
    /// and released at the end.
    /// Returns the mean step of each set in the alternation and whether the tuned set stayed.
    @discardableResult
    public func tuneGEMMs(graphKey: String, replays: Int = 12, confirmations: Int = 3,
                          step: () -> Void) -> (heuristicMilliseconds: Double, tunedMilliseconds: Double, keptTuned: Bool) {
        precondition(replays >= 1 && confirmations >= 1, "tuneGEMMs: replays and confirmations must be at least 1")
        func stepMilliseconds() -> Double {
            releaseGraph(graphKey)
            withGraph(key: graphKey, step)  // the capture and its first launch
            return timeMilliseconds { for _ in 0..<replays { withGraph(key: graphKey, step) } } / Double(replays)
        }
        releaseGraph(graphKey)
        blas.launchedShapes = []
        withGraph(key: graphKey, step)
        let launched = blas.launchedShapes ?? []
        blas.launchedShapes = nil
        let keys = launched.sorted { ($0.m * $0.k * $0.batch, $0.n) > ($1.m * $1.k * $1.batch, $1.n) }
        var shapes: [GEMMTuning.Shape] = []
        for key in keys {
            let candidates = blas.candidates(of: key)
            guard candidates.count > 1 else { continue }
            var ms: [Double] = []
            for i in candidates.indices {
                blas.choose(i, for: key)
                ms.append(stepMilliseconds())
            }
            let best = ms.indices.min { ms[$0] < ms[$1] }!
            blas.choose(best, for: key)
            shapes.append(GEMMTuning.Shape(key: key, candidates: candidates, stepMilliseconds: ms, chosen: best))
        }
        var heuristic: [Double] = [], tuned: [Double] = []
        for _ in 0..<confirmations {
            for s in shapes { blas.choose(0, for: s.key) }
            heuristic.append(stepMilliseconds())
            for s in shapes { blas.choose(s.chosen, for: s.key) }
            tuned.append(stepMilliseconds())
        }
        let heuristicMean = heuristic.reduce(0, +) / Double(confirmations), tunedMean = tuned.reduce(0, +) / Double(confirmations)
        let kept = tunedMean < heuristicMean
        if !kept { for s in shapes { blas.choose(0, for: s.key) } }
        releaseGraph(graphKey)
        gemmTuningRecords.append(GEMMTuning(graphKey: graphKey, shapes: shapes, heuristicMilliseconds: heuristic, tunedMilliseconds: tuned, kept: kept))
        return (heuristicMean, tunedMean, kept)
    }

    /// Every `tuneGEMMs` so far as JSON: per shape (m, n, k, K-slices) each candidate's step time,
    /// then the alternated step times of the heuristic's and the tuned choices, and which stayed.
    public var gemmTunings: [[String: Any]] {
        gemmTuningRecords.map { t in
            [
                "graph": t.graphKey, "kept_tuned": t.kept, "heuristic_step_ms": t.heuristicMilliseconds, "tuned_step_ms": t.tunedMilliseconds,
                "shapes": t.shapes.map { s in
                    [
                        "m": s.key.m, "n": s.key.n, "k": s.key.k, "batch": s.key.batch,
                        "heuristic": s.candidates[0].description, "chosen": s.candidates[s.chosen].description,
                        "candidates": zip(s.candidates, s.stepMilliseconds).map { ["config": $0.description, "step_ms": $1] as [String: Any] },
                    ] as [String: Any]
                },
            ] as [String: Any]
        }
    }
}
