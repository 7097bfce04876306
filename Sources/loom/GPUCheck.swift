import ArgumentParser
import CPUBackend
import CUDABackend
import Foundation
import LoomCore
import Models

/// `loom gpu-check` (hidden): every CUDA op against the CPU backend on the same inputs, then whole
/// models against their references (`reference.json` of the fixtures, or references that
/// `scripts/gpu/hf_reference.py` wrote with transformers in bf16). Prints one JSON object.
struct GPUCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpu-check", abstract: "Check the CUDA backend against the CPU backend and model references.", shouldDisplay: false)

    @Option(help: "The fixtures folder (models under models/, stories260k).")
    var fixtures = "Fixtures"

    @Option(help: "A model folder holding a reference.json to check as well; repeat for several.")
    var model: [String] = []

    @Option(help: "Also write the JSON report to this file.")
    var output: String?

    @Flag(help: "Check the ops only.")
    var opsOnly = false

    @Option(help: "With N > 1: instead of the single-GPU model checks, the fixture models (and each --model folder with adapters and a mixed batch) split over GPUs 0 ..< N (NCCL) with mixed adapters, against one GPU, the CPU backend and PEFT.")
    var tpSize = 1

    func run() throws {
        let gpu = try CUDABackend()
        var report: [String: Any] = ["environment": gpu.environment]
        var checks = OpChecks(gpu: gpu)
        let ops = checks.run()
        report["ops"] = ops
        var allPassed = ops.allSatisfy { ($0["pass"] as? Bool) == true }
        if !opsOnly && tpSize > 1 {
            let gpus = [gpu] + (try (1..<tpSize).map { try CUDABackend(device: $0) })
            let communicators = try NCCLCommunicator.group(backends: gpus)
            report["nccl"] = communicators[0].ncclVersion
            report["gpus"] = gpus.map(\.deviceName)
            let collectives = TensorParallelCheck.collectives(gpus: gpus, communicators: communicators)
            FileHandle.standardError.write(Data("collectives: \(collectives)\n".utf8))
            report["ops"] = ops + [collectives]
            if (collectives["pass"] as? Bool) != true { allPassed = false }
            let results = TensorParallelCheck.run(fixtures: fixtures, extra: model, gpus: gpus, communicators: communicators)
            if results.contains(where: { ($0["pass"] as? Bool) != true }) || results.isEmpty { allPassed = false }
            report["tensor_parallel"] = results
        } else if !opsOnly {
            var folders: [String] = []
            let models = (fixtures as NSString).appendingPathComponent("models")
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: models)) ?? []).sorted() {
                let dir = (models as NSString).appendingPathComponent(name)
                if FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("config.json")) { folders.append(dir) }
            }
            folders.append((fixtures as NSString).appendingPathComponent("stories260k"))
            folders += model
            var results: [[String: Any]] = []
            for dir in folders {
                let result = ModelCheck.run(directory: dir, backend: gpu)
                if (result["pass"] as? Bool) == false { allPassed = false }
                results.append(result)
                FileHandle.standardError.write(Data("model \(dir): \(result["summary"] ?? result["error"] ?? "")\n".utf8))
                for lora in result["lora"] as? [[String: Any]] ?? [] {
                    FileHandle.standardError.write(Data("lora \(dir): \(lora["summary"] ?? "")\n".utf8))
                }
            }
            report["models"] = results
        }
        report["pass"] = allPassed
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted])
        if let output { try data.write(to: URL(fileURLWithPath: output)) }
        print(String(decoding: data, as: UTF8.self))
    }
}

/// One model against its reference: top-5 logprobs at the prefill position (and at each decode
/// step while the greedy tokens agree, where the reference records them) and greedy agreement;
/// with adapters (DIR/adapters and adapter cases), the mixed-adapter check of `LoRAModelCheck` too.
enum ModelCheck {
    struct Case {
        /// The adapter the reference ran under; nil: the base model.
        var adapter: String?
        var promptIds: [Int]
        var lastLogits: [Float]
        var greedyIds: [Int]
        /// Per step (0: the prefill position): the reference's top-5 token ids and their logprobs.
        var stepTop5: [([Int], [Float])]
    }

    /// The reference file's name, its cases, and `hf_bf16_vs_f32` where hf_reference.py recorded it.
    static func loadCases(_ dir: String) throws -> (file: String, cases: [Case], floor: [String: Any]?) {
        let fm = FileManager.default
        let candidates = ["reference.json", "reference_greedy.json"].map { (dir as NSString).appendingPathComponent($0) }
        guard let path = candidates.first(where: { fm.fileExists(atPath: $0) }), let data = fm.contents(atPath: path),
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any], let cases = json["cases"] as? [[String: Any]]
        else { throw LoomError.fileNotFound(path: candidates[0]) }
        func ints(_ v: Any?) -> [Int] { (v as? [Any] ?? []).map { ($0 as! NSNumber).intValue } }
        func floats(_ v: Any?) -> [Float] { (v as? [Any] ?? []).map { ($0 as! NSNumber).floatValue } }
        var result: [Case] = []
        for c in cases {
            let steps = (c["step_top5_ids"] as? [Any] ?? []).enumerated().map { (i, ids) in
                (ints(ids), floats((c["step_top5_logprobs"] as? [Any])?[i]))
            }
            result.append(Case(adapter: c["adapter"] as? String, promptIds: ints(c["prompt_ids"]), lastLogits: floats(c["last_logits"] ?? c["last_position_logits"]),
                               greedyIds: ints(c["greedy_ids"] ?? c["greedy_new_ids"]), stepTop5: steps))
        }
        return ((path as NSString).lastPathComponent, result, json["hf_bf16_vs_f32"] as? [String: Any])
    }

    static func logSoftmax(_ x: [Float]) -> [Float] {
        let m = x.max() ?? 0
        let lse = m + Float(log(x.reduce(0.0) { $0 + exp(Double($1 - m)) }))
        return x.map { $0 - lse }
    }

    static func top5(_ x: [Float]) -> [Int] {
        Array(x.indices.sorted { x[$0] > x[$1] || (x[$0] == x[$1] && $0 < $1) }.prefix(5))
    }

    /// Largest |Δ logprob| over the top-5 tokens of `reference`, worst case (empty rows skipped).
    static func top5Difference(_ ours: [[Float]], _ reference: [[Float]]) -> Float {
        var worst: Float = 0
        for (a, b) in zip(ours, reference) where !a.isEmpty && !b.isEmpty {
            let la = logSoftmax(a), lb = logSoftmax(b)
            for id in top5(lb) { worst = max(worst, abs(la[id] - lb[id])) }
        }
        return worst
    }

    /// One case's output against its reference.
    struct Comparison {
        /// Largest |Δ logprob| over the reference's top-5 tokens at the prefill position.
        var prefill: Float = 0
        /// The same over the decode steps the reference records, while the greedy tokens agree.
        var decode: Float = 0
        var decodeSteps = 0
        var tokensMatched = 0
        /// Leading tokens equal to the reference's greedy tokens.
        var prefix = 0
        var tokens = 0
        var isExact: Bool { prefix == tokens }

        /// `stepLogits[s]`: the logits after `s` generated tokens (0: the prefill position).
        init(_ c: Case, stepLogits: [[Float]], output: [Int]) {
            let ours0 = logSoftmax(stepLogits[0])
            if !c.lastLogits.isEmpty {
                let ref0 = logSoftmax(c.lastLogits)
                for id in top5(ref0) { prefill = max(prefill, abs(ours0[id] - ref0[id])) }
            } else if let (ids, lps) = c.stepTop5.first {
                for (id, lp) in zip(ids, lps) { prefill = max(prefill, abs(ours0[id] - lp)) }
            }
            prefix = zip(output, c.greedyIds).prefix { $0 == $1 }.count
            tokensMatched = zip(output, c.greedyIds).filter { $0 == $1 }.count
            tokens = c.greedyIds.count
            // Step s's logits follow s generated tokens; compare while the histories agree.
            for (s, (ids, lps)) in c.stepTop5.enumerated() where s >= 1 && s <= prefix && s < stepLogits.count {
                let ours = logSoftmax(stepLogits[s])
                for (id, lp) in zip(ids, lps) { decode = max(decode, abs(ours[id] - lp)) }
                decodeSteps += 1
            }
        }
    }

    /// The check on any backend: `loom gpu-check` passes the GPU; a CPU run checks the checker.
    static func run(directory: String, backend: ComputeBackend) -> [String: Any] {
        var out: [String: Any] = ["model": directory]
        do {
            let (file, allCases, floor) = try loadCases(directory)
            let cases = allCases.filter { $0.adapter == nil }
            out["reference"] = file
            let model = try LlamaModel(directory: directory, backend: backend, maxTokens: 1024, maxSequences: 32,
                                       maxBlocksPerSequence: 64)
            // The CPU backend (f32) on the same prompts: where the GPU and the reference disagree, it says which is off.
            let cpuModel = try LlamaModel(directory: directory, backend: CPUBackend(), maxTokens: 256, maxSequences: 1, maxBlocksPerSequence: 16)
            let cpuGenerator = Generator(model: cpuModel)
            var gpuVsCPU: Float = 0, referenceVsCPU: Float = 0
            var perCase: [[String: Any]] = []
            let generator = Generator(model: model)
            var prefillDiff: Float = 0, decodeDiff: Float = 0, decodeCompared = 0
            var tokensMatched = 0, tokensTotal = 0, exactCases = 0, prefixTotal = 0
            var worst: [String: Any] = [:]
            for (i, c) in cases.enumerated() {
                var stepLogits: [[Float]] = []
                let output = try generator.generate([GenerationRequest(promptIds: c.promptIds, maxNewTokens: c.greedyIds.count)],
                                                    onLogits: { _, _, logits in stepLogits.append(logits) })[0]
                let ours0 = logSoftmax(stepLogits[0]), ref0 = logSoftmax(c.lastLogits)
                let comparison = Comparison(c, stepLogits: stepLogits, output: output)
                let d = comparison.prefill
                if d > prefillDiff { prefillDiff = d; worst = ["case": i, "prefill_top5_max_abs": d] }
                var cpuLogits: [Float] = []
                _ = try cpuGenerator.generate([GenerationRequest(promptIds: c.promptIds, maxNewTokens: 1)],
                                              onLogits: { _, _, logits in cpuLogits = logits })
                let cpu0 = logSoftmax(cpuLogits)
                var dg: Float = 0, dr: Float = 0
                for id in top5(cpu0) { dg = max(dg, abs(ours0[id] - cpu0[id])); dr = max(dr, abs(ref0[id] - cpu0[id])) }
                gpuVsCPU = max(gpuVsCPU, dg)
                referenceVsCPU = max(referenceVsCPU, dr)
                perCase.append(["prompt_tokens": c.promptIds.count, "gpu_vs_reference": d, "gpu_vs_cpu_f32": dg, "reference_vs_cpu_f32": dr])
                prefixTotal += comparison.prefix
                tokensMatched += comparison.tokensMatched
                tokensTotal += comparison.tokens
                if comparison.isExact { exactCases += 1 }
                decodeDiff = max(decodeDiff, comparison.decode)
                decodeCompared += comparison.decodeSteps
            }
            var pass = prefillDiff <= 0.1 && (decodeCompared == 0 || decodeDiff <= 0.1)
            out["cases"] = cases.count
            out["prefill_top5_logprob_max_abs_diff"] = prefillDiff
            out["decode_top5_logprob_max_abs_diff"] = decodeCompared > 0 ? decodeDiff : NSNull()
            out["decode_steps_compared"] = decodeCompared
            out["greedy_tokens_matching"] = "\(tokensMatched)/\(tokensTotal)"
            out["greedy_matching_prefix_tokens"] = "\(prefixTotal)/\(tokensTotal)"
            out["greedy_exact_cases"] = "\(exactCases)/\(cases.count)"
            out["worst"] = worst
            out["prefill_top5_gpu_vs_cpu_f32"] = gpuVsCPU
            out["prefill_top5_reference_vs_cpu_f32"] = referenceVsCPU
            out["per_case"] = perCase
            out["tolerance"] = 0.1
            var summary = String(format: "prefill top-5 Δ %.4f (gpu–cpu %.4f, ref–cpu %.4f), decode Δ %@, greedy %d/%d tokens, %d/%d cases exact", prefillDiff, gpuVsCPU, referenceVsCPU,
                                 decodeCompared > 0 ? String(format: "%.4f over %d steps", decodeDiff, decodeCompared) : "n/a",
                                 tokensMatched, tokensTotal, exactCases, cases.count)
            // How far transformers' own bf16 run is from its f32 run (hf_reference.py records it):
            // the noise floor under which this check cannot tell a defect from rounding.
            if let floor {
                out["hf_bf16_vs_f32"] = floor
                summary += " [transformers bf16 vs f32: \(floor.keys.sorted().map { "\($0) \(floor[$0]!)" }.joined(separator: ", "))]"
            }
            let adapterDir = (directory as NSString).appendingPathComponent("adapters")
            if allCases.contains(where: { $0.adapter != nil }) && FileManager.default.fileExists(atPath: adapterDir) {
                let lora = LoRAModelCheck.run(directory: directory, cases: allCases, backend: backend)
                out["lora"] = lora
                pass = pass && !lora.isEmpty && lora.allSatisfy { ($0["pass"] as? Bool) == true }
                summary += " | " + lora.map { "\($0["summary"] ?? $0["error"] ?? "")" }.joined(separator: " | ")
            }
            out["pass"] = pass
            out["summary"] = summary
        } catch {
            out["error"] = "\(error)"
            out["pass"] = false
        }
        return out
    }
}
