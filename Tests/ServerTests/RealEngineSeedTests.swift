import CPUBackend
import Engine
import Foundation
import LoRA
import LoomCore
import ModelFormats
import Testing

@testable import Server

/// Issue 4's seed scenarios through real HTTP on loopback, against the real engine on stories260K
/// with its demo adapters and its PEFT fixture adapters, outputs checked against transformers + PEFT.
@Suite struct RealEngineSeedTests {
    static let stories = TestSupport.url("Fixtures/stories260k").path
    static let fixtureAdapters = TestSupport.url("Fixtures/models/stories260k/adapters").path
    static let demo = TestSupport.url("Fixtures/demo-adapters").path

    struct Case {
        var adapter: String?
        var prompt: [Int]
        var greedy: [Int]
    }

    static let cases: [Case] = {
        let data = try! Data(contentsOf: TestSupport.url("Fixtures/models/stories260k/reference.json"))
        let json = try! JSON.parse(Array(data))
        return json["cases"]!.arrayValue!.map { c in
            Case(adapter: c["adapter"]?.stringValue, prompt: c["prompt_ids"]!.arrayValue!.map { $0.intValue! },
                 greedy: c["greedy_ids"]!.arrayValue!.map { $0.intValue! })
        }
    }()

    static func engine(slots: Int = 8, specs: [LoRAPathSpec], rank: Int? = nil, modules: Set<TargetModule>? = nil) throws -> InferenceEngine {
        var lora = LoRAOptions()
        lora.maxLorasPerBatch = slots
        lora.maxLoraRank = rank
        lora.targetModules = modules
        var options = EngineOptions()
        options.maxTotalTokens = 8192
        options.chunkedPrefillSize = 64
        let engine = try InferenceEngine(modelPath: stories, backend: CPUBackend(), loraOptions: lora, loraPaths: specs,
                                         options: options, modelName: "stories260k")
        engine.start()
        return engine
    }

    static var demoSpecs: [LoRAPathSpec] {
        ["pirate", "dragon"].map { LoRAPathSpec(name: $0, path: "\(demo)/\($0)") }
    }

    static func greedy(_ n: Int) -> JSON { ["max_new_tokens": .int(n), "temperature": 0, "ignore_eos": true] }

    func texts(_ r: TestResponse) throws -> [String] {
        try #require(try r.json().arrayValue).map { $0["text"]?.stringValue ?? "" }
    }

    @Test func oneAdapterAndTheBaseInOneBatch() async throws {
        let engine = try Self.engine(specs: Self.demoSpecs)
        try await withServer(engine) { server in
            let body: JSON = ["text": ["Once upon a time", "Once upon a time"], "lora_path": ["pirate", nil], "sampling_params": Self.greedy(24)]
            let both = try texts(try await server.post("/generate", body))
            let base = try await server.post("/generate", ["text": "Once upon a time", "sampling_params": Self.greedy(24)]).json()
            #expect(both[0].contains("Jack"), "\(both[0])")
            #expect(both[1] == base["text"]?.stringValue, "the base row is the base model's continuation")
            #expect(both[1].hasPrefix(", there was a little girl named Lily"))
        }
        await engine.shutdown(grace: 0)
    }

    @Test func twoAdaptersInOneBatch() async throws {
        let engine = try Self.engine(specs: Self.demoSpecs)
        try await withServer(engine) { server in
            let body: JSON = ["text": ["Once upon a time", "Once upon a time"], "lora_path": ["pirate", "dragon"], "sampling_params": Self.greedy(24)]
            let out = try texts(try await server.post("/generate", body))
            #expect(out[0].contains("Jack") && out[1].contains("Spark"), "\(out)")
        }
        await engine.shutdown(grace: 0)
    }

    @Test func loadUnloadAndReplaceUnderTheSameName() async throws {
        let engine = try Self.engine(specs: [], rank: 64, modules: Set(TargetModule.allCases))
        let qv = Self.cases.first { $0.adapter == "r4-qv" && $0.prompt.count > 5 }!
        let all = Self.cases.first { $0.adapter == "r8-all" && $0.prompt == qv.prompt }!
        try await withServer(engine) { server in
            func run() async throws -> TestResponse {
                try await server.post("/generate", ["input_ids": JSON(qv.prompt), "lora_path": "x", "sampling_params": Self.greedy(32)])
            }
            var r = try await server.post("/load_lora_adapter", ["lora_name": "x", "lora_path": .string("\(Self.fixtureAdapters)/r4-qv")])
            let loaded = try r.json()
            #expect(r.status == 200 && loaded["success"] == true)
            let first = try await run().json()
            #expect(first["output_ids"] == JSON(qv.greedy))
            r = try await server.post("/unload_lora_adapter", ["lora_name": "x"])
            let unloaded = try r.json()
            #expect(r.status == 200 && unloaded["loaded_adapters"] == JSON.object([:]))
            r = try await run()
            #expect(r.status == 400 && r.text.contains("not loaded"))
            r = try await server.post("/load_lora_adapter", ["lora_name": "x", "lora_path": .string("\(Self.fixtureAdapters)/r8-all")])
            #expect(r.status == 200)
            let replaced = try await run().json()
            #expect(replaced["output_ids"] == JSON(all.greedy), "the replacement's output, not the old adapter's or cached KV")
        }
        await engine.shutdown(grace: 0)
    }

    @Test func pinnedAdaptersAtStartupAndByLoadWithTheLimit() async throws {
        let pinned = try LoRAPathSpec(parsing: #"{"lora_name": "pirate", "lora_path": "\#(Self.demo)/pirate", "pinned": true}"#)
        let engine = try Self.engine(slots: 3, specs: [pinned], rank: 64, modules: Set(TargetModule.allCases))
        #expect(engine.adapters?.lookup("pirate")?.pinned == true)
        try await withServer(engine) { server in
            var r = try await server.post("/load_lora_adapter", ["lora_name": "dragon", "lora_path": .string("\(Self.demo)/dragon"), "pinned": true])
            #expect(r.status == 200)
            r = try await server.post("/load_lora_adapter", ["lora_name": "third", "lora_path": .string("\(Self.fixtureAdapters)/r8-all"), "pinned": true])
            #expect(r.status == 400)
            #expect(r.text.contains("Already have 2 pinned adapters, max allowed is 2 (reserving 1 slot for dynamic use)"))
            // Pinned adapters keep their slots while a third, unpinned one cycles through the last.
            r = try await server.post("/load_lora_adapter", ["lora_name": "third", "lora_path": .string("\(Self.fixtureAdapters)/r8-all")])
            #expect(r.status == 200)
            let out = try texts(try await server.post("/generate", [
                "text": ["Once upon a time", "Once upon a time", "Once upon a time"], "lora_path": ["pirate", "dragon", "third"],
                "sampling_params": Self.greedy(16)]))
            #expect(out[0].contains("Jack") && out[1].contains("Spark"))
        }
        await engine.shutdown(grace: 0)
    }

    @Test func moreDistinctAdaptersInFlightThanSlotsMatchPEFT() async throws {
        let specs = try FileManager.default.contentsOfDirectory(atPath: Self.fixtureAdapters).sorted()
            .map { LoRAPathSpec(name: $0, path: "\(Self.fixtureAdapters)/\($0)") }
        let engine = try Self.engine(slots: 3, specs: specs)
        try await withServer(engine) { server in
            let prompts: [JSON] = Self.cases.map { c in JSON.array(c.prompt.map { JSON.int($0) }) }
            let adapters: [JSON] = Self.cases.map { c in c.adapter.map { JSON.string($0) } ?? JSON.null }
            var object = JSONObject()
            object["input_ids"] = .array(prompts)
            object["lora_path"] = .array(adapters)
            object["sampling_params"] = Self.greedy(32)
            let body = JSON.object(object)
            let items = try #require(try await server.post("/generate", body).json().arrayValue)
            #expect(items.count == Self.cases.count)
            for (item, c) in zip(items, Self.cases) {
                let expected = JSON.array(c.greedy.map { JSON.int($0) })
                #expect(item["output_ids"] == expected, "\(c.adapter ?? "base") \(c.prompt.count)-token prompt")
            }
        }
        await engine.shutdown(grace: 0)
    }

    @Test func streamingEndsWithTheSameOutputAsABlockingCall() async throws {
        let engine = try Self.engine(specs: Self.demoSpecs)
        try await withServer(engine) { server in
            let body: JSON = ["text": "Once upon a time", "lora_path": "dragon", "sampling_params": Self.greedy(20)]
            let blocking = try await server.post("/generate", body).json()
            var streamed = body
            if case .object(var o) = streamed { o["stream"] = true; streamed = .object(o) }
            let r = try await server.post("/generate", streamed)
            let events = r.events
            #expect(events.last == "[DONE]")
            let last = try JSON.parse(Array(events[events.count - 2].utf8))
            #expect(last["text"] == blocking["text"] && last["output_ids"] == blocking["output_ids"])
        }
        await engine.shutdown(grace: 0)
    }

    @Test func openAIRoutesChooseAdaptersByModelName() async throws {
        let engine = try Self.engine(specs: Self.demoSpecs)
        try await withServer(engine, configure: { $0.servedModelName = "stories260k" }) { server in
            let colon = try await server.post("/v1/completions", ["model": "stories260k:pirate", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0])
            let bare = try await server.post("/v1/completions", ["model": "dragon", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0])
            let c = try colon.json(), b = try bare.json()
            #expect(c["choices"]?.arrayValue?.first?["text"]?.stringValue?.contains("Jack") == true, "\(c)")
            #expect(c["model"] == "stories260k:pirate")
            #expect(b["choices"]?.arrayValue?.first?["text"]?.stringValue?.contains("Spark") == true, "\(b)")
            let models = try await server.get("/v1/models").json()
            let cards = try #require(models["data"]?.arrayValue)
            #expect(cards.map { $0["id"]?.stringValue } == ["stories260k", "pirate", "dragon"])
            #expect(cards[1]["root"]?.stringValue == "\(Self.demo)/pirate" && cards[1]["parent"] == "stories260k")
        }
        await engine.shutdown(grace: 0)
    }

    @Test func disconnectReturnsBlocksToThePool() async throws {
        let engine = try Self.engine(specs: Self.demoSpecs)
        try await withServer(engine) { server in
            let port = server.port
            try await TestHTTP.onThread {
                let c = try TestConnection(port: port)
                let request: JSON = ["text": "Once upon a time", "lora_path": "pirate", "stream": true,
                                     "sampling_params": ["max_new_tokens": 400, "ignore_eos": true, "temperature": 0]]
                try c.send(method: "POST", path: "/generate", headers: ["Content-Type": "application/json"], body: request.serialized())
                _ = try c.readHead()
                _ = try c.readChunk()
                c.hangUp()
            }
            let idle = await eventually(30) {
                let s = engine.stats
                return s.running == 0 && s.waiting == 0 && s.freeBlocks + s.cachedBlocks == s.totalBlocks && s.inFlightByAdapter.isEmpty
            }
            #expect(idle, "\(engine.stats)")
        }
        await engine.shutdown(grace: 0)
    }

    @Test func greedyOutputIsTheSameAloneAndInABusyMixedBatch() async throws {
        let engine = try Self.engine(slots: 3, specs: Self.demoSpecs)
        try await withServer(engine) { server in
            let probe: JSON = ["text": "Lily and Tom went to the", "lora_path": "dragon", "sampling_params": Self.greedy(24)]
            let alone = try await server.post("/generate", probe).json()["output_ids"]
            let busy = try await withThrowingTaskGroup(of: JSON?.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        _ = try await server.post("/generate", ["text": .string("One day \(i)"), "lora_path": i % 3 == 0 ? nil : (i % 3 == 1 ? "pirate" : "dragon"),
                                                                "sampling_params": Self.greedy(30)])
                        return nil
                    }
                }
                group.addTask { try await server.post("/generate", probe).json()["output_ids"] }
                var result: JSON?
                for try await r in group { if let r { result = r } }
                return result
            }
            #expect(alone != nil && busy == alone)
        }
        await engine.shutdown(grace: 0)
    }
}
