//! A small built-in knowledge base, each document with the clearance it needs.

use serde::{Deserialize, Serialize};
use tidings_events::{Embedder, HashingEmbedder};

/// Clearance levels, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Clearance {
    /// Anyone.
    Public,
    /// Staff.
    Internal,
    /// Need to know.
    Confidential,
    /// Few people.
    Secret,
}

impl Clearance {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Clearance::Public => "PUBLIC",
            Clearance::Internal => "INTERNAL",
            Clearance::Confidential => "CONFIDENTIAL",
            Clearance::Secret => "SECRET",
        }
    }

    /// Parses a stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PUBLIC" => Some(Clearance::Public),
            "INTERNAL" => Some(Clearance::Internal),
            "CONFIDENTIAL" => Some(Clearance::Confidential),
            "SECRET" => Some(Clearance::Secret),
            _ => None,
        }
    }
}

/// One document.
pub struct Document {
    /// Its id.
    pub id: &'static str,
    /// Its title.
    pub title: &'static str,
    /// The answer it gives.
    pub body: &'static str,
    /// Who may read it.
    pub clearance: Clearance,
    embedding: Vec<f32>,
}

/// The documents, embedded once at start-up.
pub struct KnowledgeBase {
    docs: Vec<Document>,
    embedder: HashingEmbedder,
}

/// A document's similarity below which it is not an answer.
pub const MIN_MATCH: f32 = 0.2;

const DOCS: &[(&str, &str, &str, &str, Clearance)] = &[
    ("password-reset", "How to reset your password", "password reset forgot login account locked",
     "Open the self-service portal, choose 'Forgot password', and follow the link sent to your work email. Accounts lock after five failed attempts and unlock after 15 minutes.", Clearance::Public),
    ("vpn-setup", "Setting up the VPN", "vpn remote access setup connect laptop home",
     "Install the company VPN client from the software centre, sign in with your work account, and pick the nearest gateway. Remote access requires a managed laptop.", Clearance::Internal),
    ("expense-policy", "Expense policy", "expenses travel reimbursement receipts policy claim",
     "Submit expenses within 30 days with itemised receipts. Travel over 500 EUR needs prior approval from your manager.", Clearance::Internal),
    ("office-hours", "Office opening hours", "office hours open building reception",
     "The office is open 7:00 to 20:00 on weekdays. Reception is staffed 8:30 to 17:30.", Clearance::Public),
    ("incident-runbook", "Security incident runbook", "security incident breach response runbook escalation",
     "Contain first: isolate affected hosts, revoke exposed credentials, then page the on-call security lead. Preserve logs; do not reboot compromised machines.", Clearance::Confidential),
    ("salary-bands", "Salary bands", "salary bands compensation pay grades",
     "Salary bands are reviewed every April; band tables are held by HR business partners.", Clearance::Confidential),
    ("merger-plans", "Project Lighthouse", "merger acquisition lighthouse project plans deal",
     "Project Lighthouse: negotiations are in the due-diligence phase; announcement not before Q3.", Clearance::Secret),
];

impl KnowledgeBase {
    /// The built-in documents.
    pub fn builtin() -> Self {
        let embedder = HashingEmbedder::default();
        let docs = DOCS
            .iter()
            .map(|(id, title, keywords, body, clearance)| Document {
                id,
                title,
                body,
                clearance: *clearance,
                embedding: embedder.embed(&format!("{title} {keywords}")),
            })
            .collect();
        Self { docs, embedder }
    }

    /// The document closest to `question`, with its similarity, if any is close enough.
    pub fn best_match(&self, question: &str) -> Option<(&Document, f32)> {
        let q = self.embedder.embed(question);
        self.docs
            .iter()
            .map(|d| (d, tidings_events::cosine(&q, &d.embedding)))
            .filter(|(_, s)| *s >= MIN_MATCH)
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_find_their_documents() {
        let kb = KnowledgeBase::builtin();
        assert_eq!(
            kb.best_match("I forgot my password, how do I reset it?")
                .unwrap()
                .0
                .id,
            "password-reset"
        );
        assert_eq!(
            kb.best_match("how do I connect to the VPN from home")
                .unwrap()
                .0
                .id,
            "vpn-setup"
        );
        assert_eq!(
            kb.best_match("what are the plans for the Lighthouse merger?")
                .unwrap()
                .0
                .id,
            "merger-plans"
        );
        assert!(kb.best_match("zzz qqq").is_none());
    }

    #[test]
    fn clearances_are_ordered() {
        assert!(Clearance::Public < Clearance::Secret);
        assert_eq!(Clearance::parse("internal"), Some(Clearance::Internal));
    }
}
