import LoomCore
import Foundation

/// The served model's chat template: `chat_template` from `tokenizer_config.json` (a string, or a
/// list of `{name, template}` where `default` is used), rendered with `messages`, `bos_token`,
/// `eos_token`, `add_generation_prompt` and any `chat_template_kwargs`.
///
/// A model without a template gets a documented plain fallback: each message as
/// `"<Role>: <content>\n"` (role capitalised), then `"Assistant:"` when a generation prompt is
/// asked for; the text is tokenized with the tokenizer's special tokens (BOS), while a real
/// template's output is tokenized without them, since templates write BOS themselves.
public struct ChatTemplate: Sendable {
    public let source: String?
    public let bosToken: String
    public let eosToken: String
    private let template: Result<JinjaTemplate, TemplateError>?

    public init(source: String?, bosToken: String = "", eosToken: String = "") {
        self.source = source
        self.bosToken = bosToken
        self.eosToken = eosToken
        template = source.map { s in Result { try JinjaTemplate(s) }.mapError { $0 as? TemplateError ?? TemplateError("\($0)") } }
    }

    /// Reads `tokenizer_config.json` in `directory`; no file or no `chat_template`: the fallback.
    public init(tokenizerDirectory directory: URL) throws {
        let url = directory.appendingPathComponent("tokenizer_config.json")
        guard let data = try? Data(contentsOf: url) else {
            self.init(source: nil)
            return
        }
        let config = try JSON.parse(Array(data))
        func tokenText(_ key: String) -> String {
            config[key]?.stringValue ?? config[key]?["content"]?.stringValue ?? ""
        }
        var source = config["chat_template"]?.stringValue
        if let list = config["chat_template"]?.arrayValue {
            source = list.first { $0["name"]?.stringValue == "default" }?["template"]?.stringValue
                ?? list.first?["template"]?.stringValue
        }
        self.init(source: source, bosToken: tokenText("bos_token"), eosToken: tokenText("eos_token"))
    }

    public var isFallback: Bool { source == nil }

    /// The prompt text for `messages` (JSON objects with `role` and `content`).
    public func render(messages: [JSON], addGenerationPrompt: Bool, extra: JSONObject = [:]) throws -> String {
        guard let template else { return Self.fallback(messages: messages, addGenerationPrompt: addGenerationPrompt) }
        let parsed: JinjaTemplate
        switch template {
        case .success(let t): parsed = t
        case .failure(let e): throw TemplateError("the model's chat template cannot be used: \(e.description)")
        }
        var context: [String: JSON] = [:]
        for (k, v) in extra.pairs { context[k] = v }
        context["messages"] = .array(messages)
        context["bos_token"] = .string(bosToken)
        context["eos_token"] = .string(eosToken)
        context["add_generation_prompt"] = .bool(addGenerationPrompt)
        return try parsed.render(context)
    }

    static func fallback(messages: [JSON], addGenerationPrompt: Bool) -> String {
        var text = ""
        for m in messages {
            let role = m["role"]?.stringValue ?? "user"
            text += role.prefix(1).uppercased() + role.dropFirst() + ": " + (m["content"]?.stringValue ?? "") + "\n"
        }
        if addGenerationPrompt { text += "Assistant:" }
        return text
    }
}
