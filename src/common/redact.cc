#include "common/redact.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace kato {

namespace {

constexpr const char* kMask = "***";

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool IsKeyChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
}

// KATO1.<hex>.<hex> anywhere in the word becomes KATO1.***.
std::string MaskJoinTokens(std::string word) {
  const std::string prefix = "kato1.";
  for (size_t at = Lower(word).find(prefix); at != std::string::npos;
       at = Lower(word).find(prefix, at + 1)) {
    size_t begin = at + prefix.size(), end = begin;
    while (end < word.size() &&
           (std::isxdigit(static_cast<unsigned char>(word[end])) || word[end] == '.'))
      ++end;
    if (end > begin) word.replace(begin, end - begin, kMask);
  }
  return word;
}

// scheme://USER:PASSWORD@HOST/...?password=... : the password and secret query values.
std::string MaskUrls(std::string word) {
  for (size_t at = word.find("://"); at != std::string::npos; at = word.find("://", at + 3)) {
    size_t auth = at + 3;
    size_t auth_end = std::min(word.find_first_of("/?#", auth), word.size());
    size_t amp = word.rfind('@', auth_end == 0 ? 0 : auth_end - 1);
    if (amp != std::string::npos && amp >= auth) {
      size_t colon = word.find(':', auth);
      if (colon < amp) word.replace(colon + 1, amp - colon - 1, kMask);
    }
    auth_end = std::min(word.find_first_of("/?#", auth), word.size());
    size_t query = word.find('?', auth_end);
    size_t url_end = word.find("://", auth);  // the next URL in the word, if any
    for (size_t p = query; p != std::string::npos && p < url_end && p < word.size();
         p = word.find('&', p + 1)) {
      size_t eq = word.find('=', p + 1);
      size_t next = std::min(word.find('&', p + 1), word.size());
      if (eq == std::string::npos || eq > next) continue;
      if (IsSecretName(word.substr(p + 1, eq - p - 1))) word.replace(eq + 1, next - eq - 1, kMask);
    }
  }
  return word;
}

// KEY=VALUE or --KEY=VALUE with a secret KEY.
std::string MaskAssignment(std::string word) {
  size_t eq = word.find('=');
  if (eq == std::string::npos || eq == 0) return word;
  std::string key = word.substr(0, eq);
  if (!std::all_of(key.begin(), key.end(), IsKeyChar) || !IsSecretName(key)) return word;
  return word.substr(0, eq + 1) + kMask;
}

// A flag without "=" whose name is secret: its value is the next word.
bool IsSecretFlag(const std::string& word) {
  return word.size() > 1 && word[0] == '-' && word.find('=') == std::string::npos &&
         IsSecretName(word);
}

}  // namespace

bool IsSecretName(const std::string& name) {
  std::string n = Lower(name);
  for (const char* s :
       {"token", "password", "passwd", "secret", "api_key", "apikey", "private_key", "credential"})
    if (n.find(s) != std::string::npos) return true;
  return false;
}

std::string RedactCommandLine(const std::string& command_line) {
  std::vector<std::string> words;
  for (size_t i = 0;;) {
    size_t sp = command_line.find(' ', i);
    words.push_back(command_line.substr(i, sp == std::string::npos ? std::string::npos : sp - i));
    if (sp == std::string::npos) break;
    i = sp + 1;
  }
  // `config set COMPONENT KEY VALUE...`: VALUE is positional (and may span words).
  size_t secret_from = words.size();
  for (size_t i = 0; i + 4 < words.size(); ++i)
    if (words[i] == "config" && words[i + 1] == "set" && IsSecretName(words[i + 3])) {
      secret_from = i + 4;
      break;
    }
  std::string out;
  bool mask_next = false;
  for (size_t i = 0; i < words.size(); ++i) {
    std::string w = words[i];
    if (i >= secret_from) {
      w = w.empty() ? w : kMask;
    } else if (mask_next) {
      if (!w.empty()) w = kMask, mask_next = false;  // "--token  VALUE": skip empty words
    } else {
      mask_next = IsSecretFlag(w);
      w = MaskAssignment(MaskUrls(MaskJoinTokens(w)));
    }
    out += (i ? " " : "") + w;
  }
  return out;
}

}  // namespace kato
