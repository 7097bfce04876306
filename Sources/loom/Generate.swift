import ArgumentParser
import CPUBackend
import Foundation
import LoomCore
import LoRA
import Models
import Tokenization

/// `loom generate`: continue prompts offline, all in one batch.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Continue one or more prompts and print the results.")

    @Option(help: "A Hugging Face model folder (config.json, safetensors, tokenizer.json). Default: the bundled stories260K.")
    var modelPath: String?

    @Option(help: "A prompt; repeat for several, run as one batch.")
    var prompt: [String] = []

    @Option(help: "The adapter of each prompt, in order (the i-th --lora goes with the i-th --prompt); none means the base model.")
    var lora: [String] = []

    @OptionGroup(title: "LoRA")
    var loraFlags: LoRAFlags

    @Option(help: "The most tokens to generate per prompt.")
    var maxNewTokens: Int = 64

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(help: "Seed of the sampler (with --temperature > 0).")
    var seed: UInt64 = 0

    @Option(help: "Tensor-parallel ranks (threads on the CPU).")
    var tpSize = 1

    @Flag(help: "Keep generating past EOS.")
    var ignoreEos = false

    @Flag(help: "Print one JSON object per prompt and line: prompt_ids, output_ids, text.")
    var json = false

    @Flag(help: "Print the decode speed to standard error.")
    var timing = false

    mutating func validate() throws {
        if prompt.isEmpty { throw ValidationError("give at least one --prompt") }
        if lora.count > prompt.count { throw ValidationError("\(lora.count) --lora values for \(prompt.count) prompts") }
        if !lora.isEmpty && !loraFlags.isEnabled && lora.contains(where: { $0 != "none" }) {
            throw ValidationError("--lora needs adapters: give them with --lora-paths")
        }
        if maxNewTokens < 0 { throw ValidationError("--max-new-tokens must be at least 0") }
        if tpSize < 1 { throw ValidationError("--tp-size must be at least 1") }
        if temperature < 0 || !temperature.isFinite { throw ValidationError("--temperature must be a finite number ≥ 0") }
    }

    func run() throws {
        let directory = try modelPath ?? BundledModel.directory()
        let backends: [ComputeBackend] = (0..<tpSize).map { _ in CPUBackend() }
        let communicators: [Communicator?] = tpSize == 1 ? [nil] : CPUCommunicator.group(size: tpSize)
        let tokenizer = try Tokenizer(directory: URL(fileURLWithPath: directory))
        let model = try LlamaModel(directory: directory, backends: backends, communicators: communicators,
                                   maxTokens: 2048, maxSequences: max(prompt.count, 1))
        var manager: LoRAManager?
        var refs: [AdapterRef?] = Array(repeating: nil, count: prompt.count)
        if loraFlags.isEnabled {
            let m = try LoRAManager(options: try loraFlags.options(), model: model, maxTokens: model.maxTokens, initial: try loraFlags.specs())
            let names: [String?] = prompt.indices.map { i in i < lora.count && lora[i] != "none" ? lora[i] : nil }
            refs = try m.registry.resolve(names)
            manager = m
        }
        let stop = ignoreEos ? [] : Set(model.config.eosTokenIds + (tokenizer.eosTokenId.map { [$0] } ?? []))
        let requests = zip(prompt, refs).map { text, ref in
            GenerationRequest(promptIds: tokenizer.encode(text), maxNewTokens: maxNewTokens,
                              temperature: temperature, seed: seed, stopTokenIds: stop, adapterKey: ref?.uid ?? 0)
        }
        let start = DispatchTime.now()
        let outputs = try Generator(model: model).generate(
            requests, maxAdaptersPerStep: manager?.options.maxLorasPerBatch ?? .max,
            stepHook: manager.map { m in { rows in try m.prepare(rowAdapters: rows.map { refs[$0] }, forGraph: false) } })
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        for (request, output) in zip(requests, outputs) {
            let text = tokenizer.decode(output)
            if json {
                let object: [String: Any] = ["prompt_ids": request.promptIds, "output_ids": output, "text": text]
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(tokenizer.decode(request.promptIds) + text)
            }
        }
        if timing {
            let tokens = outputs.reduce(0) { $0 + $1.count }
            let line = String(format: "%d tokens in %.3f s: %.1f tokens/s\n", tokens, seconds, Double(tokens) / seconds)
            FileHandle.standardError.write(Data(line.utf8))
        }
    }
}
