import CPUBackend
import CUDABackend
import Foundation
import LoomCore
import LoRA
import Models

/// `loom gpu-check --tp-size N`: each fixture model split over N GPUs (NCCL) with the mixed-adapter
/// batch of its `reference.json` (S-LoRA sharding), against the same model on one GPU, on the CPU
/// backend (f32) and against PEFT's logits: top-5 logprobs of the prefill position within the
/// tolerance of the model checks (0.1), greedy tokens compared.
enum TensorParallelCheck {
    struct Outcome {
        var logits: [[Float]]
        var tokens: [[Int]]
    }

    static let newTokens = 32

    static func generate(directory: String, adapterDir: String, batch: [String: Any], backends: [ComputeBackend],
                         communicators: [Communicator?]) throws -> Outcome {
        let promptTokens = (batch["prompt_ids"] as! [Any]).map { ($0 as! [Any]).count }.reduce(0, +)
        let model = try LlamaModel(directory: directory, backends: backends, communicators: communicators, maxTokens: max(512, promptTokens),
                                   maxSequences: 16)
        let prompts = (batch["prompt_ids"] as! [Any]).map { ($0 as! [Any]).map { ($0 as! NSNumber).intValue } }
        var first = [[Float]](repeating: [], count: prompts.count)
        let tokens = try LoRAModelCheck.generate(
            model: model, adapterDir: adapterDir, prompts: prompts, adapters: (batch["adapters"] as! [Any]).map { $0 as? String },
            newTokens: prompts.map { _ in newTokens }, slots: 8, kind: .csgmv, onLogits: { s, step, l in if step == 0 { first[s] = l } }).tokens
        return Outcome(logits: first, tokens: tokens)
    }

    static func matching(_ a: [[Int]], _ b: [[Int]]) -> (tokens: Int, total: Int, rows: Int) {
        var tokens = 0, total = 0, rows = 0
        for (x, y) in zip(a, b) {
            tokens += zip(x, y).filter { $0 == $1 }.count
            total += max(x.count, y.count)
            if x == y { rows += 1 }
        }
        return (tokens, total, rows)
    }

    /// The fixture models, then `extra` folders (`scripts/gpu/hf_reference.py`'s, which hold
    /// adapters and a mixed batch of PEFT references in bf16).
    static func run(fixtures: String, extra: [String] = [], gpus: [CUDABackend], communicators: [NCCLCommunicator]) -> [[String: Any]] {
        let tp = gpus.count
        let fm = FileManager.default
        let models = (fixtures as NSString).appendingPathComponent("models")
        var folders = ((try? fm.contentsOfDirectory(atPath: models)) ?? []).sorted().map { (models as NSString).appendingPathComponent($0) }
        folders.append((fixtures as NSString).appendingPathComponent("stories260k"))
        folders += extra
        var results: [[String: Any]] = []
        for dir in folders {
            let adapterDir = (dir as NSString).appendingPathComponent("adapters")
            let referencePath = (dir as NSString).appendingPathComponent("reference.json")
            guard fm.fileExists(atPath: adapterDir), let data = fm.contents(atPath: referencePath),
                  let reference = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let batch = (reference["mixed_batches"] as? [[String: Any]])?.first
            else { continue }
            var out: [String: Any] = ["model": dir, "tp_size": tp, "adapters": (batch["adapters"] as! [Any]).map { $0 as? String ?? "base" }]
            do {
                // The reference names the model folder (stories260k's adapters sit apart from its weights).
                let dir = (reference["model_dir"] as? String).flatMap { fm.fileExists(atPath: $0) ? $0 : nil } ?? dir
                out["model"] = dir
                let config = try ModelConfig.load(directory: dir)
                try TensorShard.validate(config, size: tp)
                let start = Date()
                let split = try generate(directory: dir, adapterDir: adapterDir, batch: batch, backends: gpus, communicators: communicators)
                let whole = try generate(directory: dir, adapterDir: adapterDir, batch: batch, backends: [gpus[0]], communicators: [nil])
                let cpu = try generate(directory: dir, adapterDir: adapterDir, batch: batch, backends: [CPUBackend()], communicators: [nil])
                let peftLogits = (batch["last_logits"] as? [Any])?.map { ($0 as! [Any]).map { ($0 as! NSNumber).floatValue } } ?? []
                let peftTokens = (batch["greedy_ids"] as? [Any])?.map { ($0 as! [Any]).map { ($0 as! NSNumber).intValue } } ?? []
                let dWhole = ModelCheck.top5Difference(split.logits, whole.logits)
                let dCPU = ModelCheck.top5Difference(split.logits, cpu.logits)
                let dWholeCPU = ModelCheck.top5Difference(whole.logits, cpu.logits)
                let dPEFT = peftLogits.isEmpty ? Float.nan : ModelCheck.top5Difference(split.logits, peftLogits)
                let tokWhole = matching(split.tokens, whole.tokens)
                let tokCPU = matching(split.tokens, cpu.tokens)
                let tokPEFT = matching(split.tokens, peftTokens)
                let tokWholePEFT = matching(whole.tokens, peftTokens)
                // Pass: within the model checks' 0.1 of tp = 1 on the same GPU (the check the CPU tests make
                // at 1e-4), and no more than 0.02 further from the f32 CPU than tp = 1 is (so a fault that
                // tp = 1 shares still shows). In bf16, tp = 1 itself is more than 0.1 from f32 on these tiny,
                // peaked models, so that distance is compared, not bounded.
                let pass = dWhole <= 0.1 && dCPU <= dWholeCPU + 0.02
                out["greedy_tp_equals_tp1_gpu"] = split.tokens == whole.tokens
                out["no_further_from_cpu_than_tp1"] = dCPU <= dWholeCPU
                out["prefill_top5_tp_vs_tp1_gpu"] = dWhole
                out["prefill_top5_tp_vs_cpu_f32"] = dCPU
                out["prefill_top5_tp1_gpu_vs_cpu_f32"] = dWholeCPU
                out["prefill_top5_tp_vs_peft"] = dPEFT.isNaN ? NSNull() : dPEFT
                out["greedy_tp_vs_tp1_gpu"] = "\(tokWhole.tokens)/\(tokWhole.total) tokens, \(tokWhole.rows)/\(split.tokens.count) rows"
                out["greedy_tp_vs_cpu_f32"] = "\(tokCPU.tokens)/\(tokCPU.total) tokens, \(tokCPU.rows)/\(split.tokens.count) rows"
                out["greedy_tp_vs_peft"] = "\(tokPEFT.tokens)/\(tokPEFT.total) tokens, \(tokPEFT.rows)/\(split.tokens.count) rows"
                out["greedy_tp1_gpu_vs_peft"] = "\(tokWholePEFT.tokens)/\(tokWholePEFT.total) tokens, \(tokWholePEFT.rows)/\(split.tokens.count) rows"
                out["new_tokens"] = newTokens
                out["tolerance"] = 0.1
                out["seconds"] = Date().timeIntervalSince(start)
                out["pass"] = pass
                out["summary"] = String(format: "tp %d: top-5 Δ vs tp1 GPU %.4f, vs CPU f32 %.4f (tp1 GPU vs CPU %.4f), vs PEFT %.4f; greedy vs tp1 %d/%d, vs PEFT %d/%d (tp1 vs PEFT %d/%d)",
                                        tp, dWhole, dCPU, dWholeCPU, dPEFT, tokWhole.tokens, tokWhole.total, tokPEFT.tokens, tokPEFT.total,
                                        tokWholePEFT.tokens, tokWholePEFT.total)
            } catch {
                out["error"] = "\(error)"
                out["pass"] = false
            }
            FileHandle.standardError.write(Data("tp \(dir): \(out["summary"] ?? out["error"] ?? "")\n".utf8))
            results.append(out)
        }
        return results
    }

    /// The collectives alone on `gpus`: an all-reduce of bf16 and f32 and an all-gather with a
    /// padded last block, against the sums and layout computed on the host.
    static func collectives(gpus: [CUDABackend], communicators: [NCCLCommunicator]) -> [String: Any] {
        let tp = gpus.count
        let rows = 3, cols = 5, width = tp * cols - 2
        do {
            let f32 = try gpus.enumerated().map { r, g -> DeviceTensor in
                let t = try g.allocate(Shape(rows, 7), dtype: .f32)
                g.copy((0..<(rows * 7)).map { Float($0 * (r + 1)) }, to: t)
                return t
            }
            let bf16 = try gpus.enumerated().map { r, g -> DeviceTensor in
                let t = try g.allocate(Shape(rows, 7), dtype: .bf16)
                g.copy((0..<(rows * 7)).map { Float(($0 % 8) * (r + 1)) }, to: t)
                return t
            }
            let parts = try gpus.enumerated().map { r, g -> DeviceTensor in
                let t = try g.allocate(Shape(rows, cols), dtype: .f32)
                g.copy((0..<(rows * cols)).map { Float(100 * r + $0) }, to: t)
                return t
            }
            let gathered = try gpus.map { try $0.allocate(Shape(rows, width), dtype: .f32) }
            let group = DispatchGroup()
            for r in 1..<tp {
                group.enter()
                let thread = Thread {
                    communicators[r].allReduceSum(f32[r]); communicators[r].allReduceSum(bf16[r])
                    communicators[r].allGather(parts[r], out: gathered[r])
                    gpus[r].synchronize()
                    group.leave()
                }
                thread.start()
            }
            communicators[0].allReduceSum(f32[0]); communicators[0].allReduceSum(bf16[0])
            communicators[0].allGather(parts[0], out: gathered[0])
            gpus[0].synchronize()
            group.wait()
            let scale = Float(tp * (tp + 1) / 2)
            var ok = true
            for r in 0..<tp {
                ok = ok && gpus[r].download(f32[r]) == (0..<(rows * 7)).map { Float($0) * scale }
                ok = ok && gpus[r].download(bf16[r]) == (0..<(rows * 7)).map { Float($0 % 8) * scale }
                var expected = [Float](repeating: 0, count: rows * width)
                for i in 0..<rows {
                    for c in 0..<width { expected[i * width + c] = Float(100 * (c / cols) + i * cols + c % cols) }
                }
                ok = ok && gpus[r].download(gathered[r]) == expected
            }
            return ["op": "nccl collectives", "detail": "tp \(tp): all-reduce f32 + bf16, all-gather \(rows)×\(cols) per rank into width \(width)",
                    "pass": ok, "nccl": communicators[0].ncclVersion]
        } catch {
            return ["op": "nccl collectives", "pass": false, "error": "\(error)"]
        }
    }
}
