import Foundation
import Testing

/// `loom generate` as a user runs it: the built binary, its JSON lines.
@Suite struct GenerateCLITests {
    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(try #require(loomBinary, "the loom binary is not built"), arguments)
    }

    @Test func continuesTheStoryAsTransformersDoes() throws {
        let reference = try loadJSON(fixture("stories260k/reference_greedy.json"))
        let first = (reference["cases"] as! [[String: Any]])[0]
        #expect(first["prompt"] as? String == "Once upon a time")
        let result = try run(["generate", "--model-path", fixture("stories260k"), "--prompt", "Once upon a time", "--max-new-tokens", "40", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let line = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(ints(line["prompt_ids"]) == ints(first["prompt_ids"]))
        #expect(ints(line["output_ids"]) == Array(ints(first["greedy_new_ids"]).prefix(40)))
        let expectedText = (first["greedy_text"] as! String).dropFirst("Once upon a time".count)
        #expect(expectedText.hasPrefix(line["text"] as! String))
        #expect((line["text"] as! String).count > 60)

        let plain = try run(["generate", "--prompt", "Once upon a time", "--max-new-tokens", "40"])
        #expect(plain.stdout.hasPrefix("Once upon a time, there was a little girl named Lily."))
    }

    @Test func printsOneLinePerPromptInOrderWithAdapters() throws {
        let result = try run([
            "generate", "--json", "--max-new-tokens", "12",
            "--lora-paths", "pirate=Fixtures/demo-adapters/pirate", "dragon=Fixtures/demo-adapters/dragon",
            "--prompt", "Once upon a time", "--lora", "pirate",
            "--prompt", "Once upon a time", "--lora", "none",
            "--prompt", "Once upon a time", "--lora", "dragon",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(lines.count == 3)
        let texts = lines.map { $0["text"] as! String }
        #expect(texts[0].contains("Jack"), "\(texts[0])")
        #expect(texts[1].hasPrefix(", there was a little girl"), "\(texts[1])")
        #expect(texts[2].contains("Spark"), "\(texts[2])")
    }

    @Test func tensorParallelRunsGiveTheSameOutput() throws {
        let args = ["generate", "--json", "--max-new-tokens", "24", "--lora-paths", "pirate=Fixtures/demo-adapters/pirate",
                    "--prompt", "Once upon a time", "--lora", "pirate", "--prompt", "Lily and Tom"]
        let single = try run(args)
        let split = try run(args + ["--tp-size", "2"])
        #expect(single.status == 0 && split.status == 0, "\(split.stderr)")
        #expect(single.stdout == split.stdout)
        let refused = try run(["generate", "--prompt", "x", "--tp-size", "3"])
        #expect(refused.status != 0 && refused.stderr.contains("--tp-size 3 must divide the number of attention heads (8)"))
    }

    @Test func unknownAdapterIsAClearError() throws {
        let result = try run(["generate", "--prompt", "Hi", "--lora", "ghost", "--lora-paths", "pirate=Fixtures/demo-adapters/pirate"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("The following requested LoRA adapters are not loaded: ghost"), "\(result.stderr)")
    }
}
