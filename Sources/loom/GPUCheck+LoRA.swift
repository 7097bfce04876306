import CPUBackend
import Foundation
import LoomCore
import LoRA
import Models

/// The mixed-adapter half of `ModelCheck`: every adapter case of a reference, with one base case,
/// as one batch through a `LoRAManager` holding every adapter of DIR/adapters (a slot each, and
/// one for the base), per LoRA backend (`--lora-backend` csgmv, sgmv and fused), against the reference
/// (PEFT): top-5 logprobs at the prefill position and at each decode step while the greedy tokens
/// agree, within `tolerance`. The same batch on the CPU backend (f32) says which side is off.
enum LoRAModelCheck {
    static let tolerance: Float = 0.1

    struct Outcome {
        /// Per case, each step's logits (0: the prefill position).
        var stepLogits: [[[Float]]]
        var tokens: [[Int]]
        /// Sequences in the first step: all of them, unless the batch did not run mixed.
        var firstStepSequences: Int
    }

    /// The batch: every adapter case, then the base case with the longest prompt.
    static func batch(_ cases: [ModelCheck.Case]) -> [ModelCheck.Case] {
        let base = cases.filter { $0.adapter == nil }.max { $0.promptIds.count < $1.promptIds.count }
        return cases.filter { $0.adapter != nil } + (base.map { [$0] } ?? [])
    }

    /// The adapter folders under `adapterDir`, by name.
    static func adapterNames(_ adapterDir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: adapterDir).filter {
            FileManager.default.fileExists(atPath: "\(adapterDir)/\($0)/adapter_config.json")
        }.sorted()
    }

    /// Runs `cases` as one generation, each under its adapter, with a slot for every adapter and the base.
    static func generate(model: LlamaModel, adapterDir: String, cases: [ModelCheck.Case], kind: LoRABackendKind) throws -> Outcome {
        var stepLogits = [[[Float]]](repeating: [], count: cases.count)
        let run = try generate(model: model, adapterDir: adapterDir, prompts: cases.map(\.promptIds), adapters: cases.map(\.adapter),
                               newTokens: cases.map { max(1, $0.greedyIds.count) }, slots: try adapterNames(adapterDir).count + 1, kind: kind,
                               onLogits: { s, _, logits in stepLogits[s].append(logits) })
        return Outcome(stepLogits: stepLogits, tokens: run.tokens, firstStepSequences: run.firstStepSequences)
    }

    /// One generation of `prompts`, prompt i under adapter `adapters[i]` (nil: base) for
    /// `newTokens[i]` tokens, through a pool of `slots` slots holding every adapter of `adapterDir`;
    /// each step's logits go to `onLogits`. Returns the tokens and the first step's sequence count.
    static func generate(model: LlamaModel, adapterDir: String, prompts: [[Int]], adapters: [String?], newTokens: [Int], slots: Int,
                         kind: LoRABackendKind, onLogits: @escaping (_ sequence: Int, _ step: Int, _ logits: [Float]) -> Void) throws
        -> (tokens: [[Int]], firstStepSequences: Int) {
        var options = LoRAOptions()
        options.maxLorasPerBatch = slots
        options.backend = kind
        let manager = try LoRAManager(options: options, model: model, maxTokens: model.maxTokens,
                                      initial: try adapterNames(adapterDir).map { LoRAPathSpec(name: $0, path: "\(adapterDir)/\($0)") })
        let refs = try manager.registry.resolve(adapters)
        var firstStepSequences: Int?
        let tokens = try Generator(model: model).generate(
            prompts.indices.map { GenerationRequest(promptIds: prompts[$0], maxNewTokens: newTokens[$0], adapterKey: refs[$0]?.uid ?? 0) },
            maxAdaptersPerStep: slots,
            stepHook: { rows in
                if firstStepSequences == nil { firstStepSequences = Set(rows).count }
                return try manager.prepare(rowAdapters: rows.map { refs[$0] }, forGraph: false)
            },
            onLogits: onLogits)
        return (tokens, firstStepSequences ?? 0)
    }

    /// Each LoRA backend on `backend`, one result each (fused last: it widens the model's weights, whose
    /// first columns the other backends still read).
    static func run(directory: String, cases allCases: [ModelCheck.Case], backend: ComputeBackend) -> [[String: Any]] {
        let kinds: [LoRABackendKind] = [.csgmv, .sgmv, .fused]
        let adapterDir = (directory as NSString).appendingPathComponent("adapters")
        let cases = batch(allCases)
        let promptTokens = cases.map(\.promptIds.count).reduce(0, +)
        let blocks = cases.map { ($0.promptIds.count + max(1, $0.greedyIds.count) + 15) / 16 }.max() ?? 1
        func load(_ backend: ComputeBackend) throws -> LlamaModel {
            try LlamaModel(directory: directory, backend: backend, maxTokens: max(promptTokens, cases.count), maxSequences: cases.count,
                           maxBlocksPerSequence: blocks)
        }
        do {
            let names = try adapterNames(adapterDir)
            let model = try load(backend)
            let cpu = try generate(model: load(CPUBackend()), adapterDir: adapterDir, cases: cases, kind: .sgmv)
            return kinds.map { kind in
                do {
                    let start = Date()
                    let outcome = try generate(model: model, adapterDir: adapterDir, cases: cases, kind: kind)
                    var out = report(outcome, cases: cases, cpu: cpu, kind: kind, adapters: names)
                    out["seconds"] = Date().timeIntervalSince(start)
                    return out
                } catch {
                    return failure(kind, error)
                }
            }
        } catch {
            return kinds.map { failure($0, error) }
        }
    }

    static func failure(_ kind: LoRABackendKind, _ error: Error) -> [String: Any] {
        ["lora_backend": kind.rawValue, "error": "\(error)", "summary": "LoRA \(kind.rawValue): error \(error)", "pass": false]
    }

    /// One plan kind's figures against the reference, overall and per adapter ("base" for the base case).
    static func report(_ outcome: Outcome, cases: [ModelCheck.Case], cpu: Outcome, kind: LoRABackendKind, adapters: [String]) -> [String: Any] {
        var perAdapter: [(name: String, comparisons: [ModelCheck.Comparison])] = []
        for (c, (logits, tokens)) in zip(cases, zip(outcome.stepLogits, outcome.tokens)) {
            let comparison = ModelCheck.Comparison(c, stepLogits: logits, output: tokens)
            let name = c.adapter ?? "base"
            if let i = perAdapter.firstIndex(where: { $0.name == name }) {
                perAdapter[i].comparisons.append(comparison)
            } else {
                perAdapter.append((name, [comparison]))
            }
        }
        func figures(_ cs: [ModelCheck.Comparison]) -> [String: Any] {
            let decodeSteps = cs.map(\.decodeSteps).reduce(0, +), tokens = cs.map(\.tokens).reduce(0, +)
            return ["cases": cs.count,
                    "prefill_top5_logprob_max_abs_diff": cs.map(\.prefill).max() ?? 0,
                    "decode_top5_logprob_max_abs_diff": decodeSteps > 0 ? cs.map(\.decode).max() ?? 0 : NSNull(),
                    "decode_steps_compared": decodeSteps,
                    "greedy_tokens_matching": "\(cs.map(\.tokensMatched).reduce(0, +))/\(tokens)",
                    "greedy_matching_prefix_tokens": "\(cs.map(\.prefix).reduce(0, +))/\(tokens)",
                    "greedy_exact_cases": "\(cs.filter(\.isExact).count)/\(cs.count)"]
        }
        func worstDiff(_ cs: [ModelCheck.Comparison]) -> Float { cs.map { max($0.prefill, $0.decode) }.max() ?? 0 }
        let all = perAdapter.flatMap(\.comparisons)
        let prefill = all.map(\.prefill).max() ?? 0, decode = all.map(\.decode).max() ?? 0
        let decodeSteps = all.map(\.decodeSteps).reduce(0, +)
        let worst = perAdapter.max { worstDiff($0.comparisons) < worstDiff($1.comparisons) }?.name ?? ""
        // Both over the CPU's top-5: with a bf16 reference, its own distance from f32 is the floor.
        let cpuPrefill = cpu.stepLogits.map { $0.first ?? [] }
        let vsCPU = ModelCheck.top5Difference(outcome.stepLogits.map { $0.first ?? [] }, cpuPrefill)
        let referenceVsCPU = ModelCheck.top5Difference(cases.map(\.lastLogits), cpuPrefill)
        let isMixed = outcome.firstStepSequences == cases.count
        var out = figures(all)
        out["lora_backend"] = kind.rawValue
        out["adapters"] = adapters
        out["slots"] = adapters.count + 1
        out["first_step_sequences"] = outcome.firstStepSequences
        out["per_adapter"] = perAdapter.map { ["adapter": $0.name].merging(figures($0.comparisons)) { $1 } }
        out["worst_adapter"] = worst
        out["prefill_top5_vs_cpu_f32"] = vsCPU
        out["prefill_top5_reference_vs_cpu_f32"] = referenceVsCPU
        out["no_further_from_cpu_f32_than_reference"] = vsCPU <= referenceVsCPU
        out["tolerance"] = tolerance
        out["pass"] = isMixed && prefill <= tolerance && (decodeSteps == 0 || decode <= tolerance)
        out["summary"] = String(
            format: "LoRA %@ (%d adapters + base, %d cases %@): prefill top-5 Δ %.4f (vs cpu %.4f, ref–cpu %.4f), decode Δ %@, greedy %d/%d tokens, %d/%d cases exact, worst %@",
            kind.rawValue, adapters.count, cases.count, isMixed ? "in one batch" : "NOT in one batch", prefill, vsCPU, referenceVsCPU,
            decodeSteps > 0 ? String(format: "%.4f over %d steps", decode, decodeSteps) : "n/a",
            all.map(\.tokensMatched).reduce(0, +), all.map(\.tokens).reduce(0, +), all.filter(\.isExact).count, all.count, worst)
        return out
    }
}
