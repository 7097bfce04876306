import Foundation
import Testing

@testable import Server

/// The Jinja subset against jinja2 itself: `ChatTemplates/vectors.json` holds what jinja2 3.1
/// rendered for each template in `ChatTemplates/` (Llama 2, Llama 3, Mistral, ChatML, Qwen 2.5
/// with tools, Zephyr, Gemma, Phi-3 and a stress template), with Hugging Face's settings
/// (`make_vectors.py`).
@Suite struct ChatTemplateTests {
    static let folder = TestSupport.url("Tests/ServerTests/ChatTemplates")

    struct Case: CustomTestStringConvertible {
        var template: String
        var conversation: String
        var addGenerationPrompt: Bool
        var tools: JSON?
        var output: String?
        var error: String?
        var testDescription: String { "\(template) \(conversation) gen=\(addGenerationPrompt)\(tools == nil ? "" : " tools")" }
    }

    static func load() throws -> (conversations: JSONObject, cases: [Case]) {
        let json = try JSON.parse(Array(try Data(contentsOf: folder.appendingPathComponent("vectors.json"))))
        let cases = (json["cases"]?.arrayValue ?? []).map { c in
            Case(template: c["template"]!.stringValue!, conversation: c["conversation"]!.stringValue!,
                 addGenerationPrompt: c["add_generation_prompt"]!.boolValue!, tools: c["tools"].flatMap { $0.isNull ? nil : $0 },
                 output: c["output"]?.stringValue, error: c["error"]?.stringValue)
        }
        return (json["conversations"]!.objectValue!, cases)
    }

    @Test func matchesJinja2OnRealTemplates() throws {
        let (conversations, cases) = try Self.load()
        #expect(cases.count > 100)
        var sources: [String: ChatTemplate] = [:]
        var checked = 0
        for c in cases {
            let template = try sources[c.template] ?? {
                let source = try String(contentsOf: Self.folder.appendingPathComponent(c.template), encoding: .utf8)
                return ChatTemplate(source: source, bosToken: "<s>", eosToken: "</s>")
            }()
            sources[c.template] = template
            let messages = conversations[c.conversation]!.arrayValue!
            var extra = JSONObject()
            if let tools = c.tools { extra["tools"] = tools }
            do {
                let out = try template.render(messages: messages, addGenerationPrompt: c.addGenerationPrompt, extra: extra)
                if let expected = c.output {
                    checked += 1
                    #expect(Array(out.utf8) == Array(expected.utf8), "\(c.testDescription)\n--- got ---\n\(out)\n--- jinja2 ---\n\(expected)")
                } else {
                    Issue.record("\(c.testDescription): rendered, but jinja2 raised \(c.error ?? "")")
                }
            } catch let e as TemplateError {
                if let expected = c.error {
                    checked += 1
                    #expect(e.message == expected, "\(c.testDescription)")
                } else {
                    Issue.record("\(c.testDescription): \(e)")
                }
            }
        }
        #expect(checked == cases.count)
    }

    @Test func fallbackWithoutATemplate() throws {
        let t = ChatTemplate(source: nil)
        #expect(t.isFallback)
        let out = try t.render(messages: [["role": "system", "content": "Be brief."], ["role": "user", "content": "Hi"]], addGenerationPrompt: true)
        #expect(out == "System: Be brief.\nUser: Hi\nAssistant:")
    }

    @Test func unsupportedAndBrokenTemplatesGiveClearErrors() throws {
        func message(_ source: String) -> String {
            do {
                _ = try ChatTemplate(source: source).render(messages: [["role": "user", "content": "x"]], addGenerationPrompt: true)
                return ""
            } catch {
                return "\(error)"
            }
        }
        #expect(message("{% macro f() %}x{% endmacro %}").contains("the {% macro %} tag is not supported"))
        #expect(message("{% for m in messages %}").contains("missing {% else / endfor %}"))
        #expect(message("{{ messages | frobnicate }}").contains("unknown filter 'frobnicate'"))
        #expect(message("{{ 'a' + 1 }}").contains("unsupported operand types"))
        #expect(message("{{ raise_exception('nope') }}") == "nope")
        #expect(message("{% if %}").contains("template line 1"))
    }

    @Test func readsTheTemplateFromTokenizerConfig() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("loom-chat-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config: JSON = [
            "bos_token": ["content": "<|begin|>", "lstrip": false], "eos_token": "<|end|>",
            "chat_template": [["name": "tool_use", "template": "T"], ["name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"]],
        ]
        try Data(config.serialized()).write(to: dir.appendingPathComponent("tokenizer_config.json"))
        let t = try ChatTemplate(tokenizerDirectory: dir)
        #expect(try t.render(messages: [["role": "user", "content": "hi"]], addGenerationPrompt: false) == "<|begin|>hi<|end|>")
        #expect(try ChatTemplate(tokenizerDirectory: TestSupport.url("Fixtures/stories260k")).isFallback)
    }
}
