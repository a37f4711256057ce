// Labels in Simplified Chinese and English. Keys are stable; the page re-renders on a switch.
const zh = {
  "app.title": "中台 · 员工工作台",
  "nav.customers": "客户 360°", "nav.segments": "客群", "nav.churn": "流失预警", "nav.ops": "运维", "nav.signin": "登录",
  "lang.switch": "English",
  "signin.title": "登录", "signin.paste": "粘贴访问令牌 (Bearer)", "signin.use": "使用此令牌",
  "signin.dev": "开发环境：签发开发令牌", "signin.mint": "签发令牌", "signin.scopes": "权限范围",
  "signin.oidc": "生产环境由银行的 OIDC 身份提供方签发令牌（授权码 + PKCE，浏览器中没有客户端密钥）。",
  "signin.oidcTitle": "使用银行统一身份认证登录", "signin.oidcStart": "跳转到身份提供方登录", "signin.failed": "登录失败",
  "signin.current": "当前令牌", "signin.none": "未登录", "signin.out": "退出",
  "customers.title": "客户查询与 360° 视图", "customers.id": "客户号", "customers.open": "打开",
  "customers.list": "客户列表", "customers.next": "下一页", "customers.name": "姓名", "customers.status": "状态",
  "view.identity": "身份（脱敏）", "view.nationalId": "身份证号", "view.mobile": "手机号", "view.email": "邮箱", "view.name": "姓名",
  "view.status": "状态", "view.kyc": "KYC 已核验", "view.risk": "风险承受能力", "view.riskExpire": "风险测评到期",
  "view.holdings": "持仓", "view.product": "产品", "view.type": "类型", "view.balance": "余额", "view.state": "状态",
  "view.position": "资产 (AUM)", "view.activity": "交易活跃度", "view.d30": "30 天", "view.d90": "90 天", "view.d365": "365 天",
  "view.count": "笔数", "view.amount": "金额", "view.lastTxn": "最近交易",
  "view.rfm": "RFM 评分", "view.segment": "客群", "view.stage": "生命周期", "view.churn": "流失风险", "view.score": "分数",
  "view.reasons": "原因", "view.offers": "下一最佳产品", "view.events": "最近事件", "view.transactions": "最近交易", "view.event": "事件", "view.aggregate": "对象", "view.aggregateVersion": "版本", "view.version": "视图版本",
  "view.updated": "更新时间", "view.live": "自动刷新中", "view.yes": "是", "view.no": "否", "view.none": "无",
  "view.direction": "方向", "view.time": "时间", "view.reveal": "显示明文（需要 pii:read，将被审计）",
  "segments.title": "客群分布", "segments.chart": "客群 × 生命周期阶段", "segments.members": "客群成员",
  "segments.refresh": "重新计算客群", "segments.refreshed": "客群已重新计算", "segments.total": "客户总数",
  "segments.count": "客户数", "segments.lastRefresh": "上次计算",
  "churn.title": "流失预警名单", "churn.rank": "排名", "churn.minScore": "最低分数", "churn.apply": "筛选",
  "ops.title": "运维：事件管道", "ops.consuming": "消费中", "ops.lag": "消费延迟（条）", "ops.backlog": "视图发布积压",
  "ops.applied": "已处理事件", "ops.dead": "死信", "ops.replayed": "已重放", "ops.quarantined": "已隔离",
  "ops.deadLetters": "死信浏览", "ops.error": "错误", "ops.headers": "消息头", "ops.event": "事件", "ops.source": "来源",
  "ops.replay": "重放", "ops.quarantine": "隔离", "ops.reason": "隔离原因", "ops.outcome": "结果", "ops.customers": "视图数",
  "ops.resolvedBy": "处理人", "ops.group": "消费组",
  "ops.outboxes": "各服务发件箱（事务性 outbox）积压", "ops.capability": "服务", "ops.outboxBacklog": "待发布事件",
  "ops.oldestPending": "最早待发布", "ops.lastPublish": "最近发布", "ops.cap.customer": "客户服务", "ops.cap.product": "产品服务",
  "ops.cap.data_hub": "数据中台（视图发布）",
  "common.loading": "加载中…", "common.error": "出错了", "common.needScope": "需要权限", "common.empty": "暂无数据",
  "common.next": "下一页", "common.first": "第一页",
};
const en = {
  "app.title": "Zhongtai · Staff workbench",
  "nav.customers": "Customer 360°", "nav.segments": "Segments", "nav.churn": "Churn watch-list", "nav.ops": "Operations", "nav.signin": "Sign in",
  "lang.switch": "中文",
  "signin.title": "Sign in", "signin.paste": "Paste an access token (Bearer)", "signin.use": "Use this token",
  "signin.dev": "Development: mint a dev token", "signin.mint": "Mint token", "signin.scopes": "Scopes",
  "signin.oidc": "In production the bank's OIDC provider issues the token (authorization code + PKCE; no client secret in the browser).",
  "signin.oidcTitle": "Sign in with the bank's identity provider", "signin.oidcStart": "Continue to the identity provider", "signin.failed": "Sign-in failed",
  "signin.current": "Current token", "signin.none": "Not signed in", "signin.out": "Sign out",
  "customers.title": "Customer search and 360° view", "customers.id": "Customer id", "customers.open": "Open",
  "customers.list": "Customers", "customers.next": "Next page", "customers.name": "Name", "customers.status": "Status",
  "view.identity": "Identity (masked)", "view.nationalId": "National id", "view.mobile": "Mobile", "view.email": "E-mail", "view.name": "Name",
  "view.status": "Status", "view.kyc": "KYC verified", "view.risk": "Risk tolerance", "view.riskExpire": "Risk assessment expires",
  "view.holdings": "Holdings", "view.product": "Product", "view.type": "Type", "view.balance": "Balance", "view.state": "State",
  "view.position": "Position (AUM)", "view.activity": "Activity", "view.d30": "30 d", "view.d90": "90 d", "view.d365": "365 d",
  "view.count": "Count", "view.amount": "Amount", "view.lastTxn": "Last transaction",
  "view.rfm": "RFM scores", "view.segment": "Segment", "view.stage": "Lifecycle stage", "view.churn": "Churn risk", "view.score": "Score",
  "view.reasons": "Reasons", "view.offers": "Next best offers", "view.events": "Recent events", "view.transactions": "Recent transactions", "view.event": "Event", "view.aggregate": "Of", "view.aggregateVersion": "Version", "view.version": "View version",
  "view.updated": "Updated", "view.live": "refreshing by itself", "view.yes": "yes", "view.no": "no", "view.none": "none",
  "view.direction": "Direction", "view.time": "Time", "view.reveal": "Show clear values (needs pii:read; audited)",
  "segments.title": "Segments", "segments.chart": "Segment × lifecycle stage", "segments.members": "Members",
  "segments.refresh": "Refresh segments", "segments.refreshed": "Segments recomputed", "segments.total": "Customers",
  "segments.count": "Customers", "segments.lastRefresh": "Last refresh",
  "churn.title": "Churn watch-list", "churn.rank": "Rank", "churn.minScore": "Minimum score", "churn.apply": "Filter",
  "ops.title": "Operations: the event pipeline", "ops.consuming": "Consuming", "ops.lag": "Consumer lag (records)", "ops.backlog": "View publish backlog",
  "ops.applied": "Events applied", "ops.dead": "Dead letters", "ops.replayed": "Replayed", "ops.quarantined": "Quarantined",
  "ops.deadLetters": "Dead-letter browser", "ops.error": "Error", "ops.headers": "Headers", "ops.event": "Event", "ops.source": "Source",
  "ops.replay": "Replay", "ops.quarantine": "Quarantine", "ops.reason": "Quarantine reason", "ops.outcome": "Outcome", "ops.customers": "Views",
  "ops.resolvedBy": "Resolved by", "ops.group": "Consumer group",
  "ops.outboxes": "Outbox backlog of every service (transactional outbox)", "ops.capability": "Service", "ops.outboxBacklog": "Events waiting",
  "ops.oldestPending": "Oldest waiting", "ops.lastPublish": "Last published", "ops.cap.customer": "Customer", "ops.cap.product": "Product",
  "ops.cap.data_hub": "Data hub (view publishing)",
  "common.loading": "Loading…", "common.error": "Something went wrong", "common.needScope": "Needs scope", "common.empty": "Nothing here",
  "common.next": "Next page", "common.first": "First page",
};
// Enum values (the API's names) shown in each language.
const zhEnums = {
  SEGMENT_HIGH_VALUE: "高价值", SEGMENT_GROWTH: "成长", SEGMENT_POTENTIAL: "潜力", SEGMENT_LONG_TAIL: "长尾", SEGMENT_NEW: "新客", SEGMENT_UNSCORED: "未评分",
  LIFECYCLE_STAGE_PROSPECT: "潜客", LIFECYCLE_STAGE_ONBOARDING: "开户中", LIFECYCLE_STAGE_NEW: "新客户", LIFECYCLE_STAGE_ACTIVE: "活跃",
  LIFECYCLE_STAGE_MATURE: "成熟", LIFECYCLE_STAGE_AT_RISK: "流失风险", LIFECYCLE_STAGE_DORMANT: "沉睡", LIFECYCLE_STAGE_CLOSED: "已关闭",
  STATUS_PENDING: "待审核", STATUS_ACTIVE: "正常", STATUS_CLOSED: "已销户", STATUS_REJECTED: "已拒绝",
  STATE_OPEN: "持有中", STATE_CLOSED: "已结清", STATE_DEAD: "待处理", STATE_REPLAYED: "已重放", STATE_QUARANTINED: "已隔离",
  TYPE_DEPOSIT: "存款", TYPE_LOAN: "贷款", TYPE_WEALTH: "理财", TYPE_CARD: "卡",
  DIRECTION_CREDIT: "存入", DIRECTION_DEBIT: "支取",
  CustomerCreated: "开户登记", CustomerUpdated: "资料变更", CustomerVerified: "KYC 核验通过", CustomerRejected: "KYC 核验拒绝",
  CustomerRiskAssessed: "风险测评", CustomerClosed: "销户", SubscriptionOpened: "产品签约", SubscriptionClosed: "产品解约",
  TransactionPosted: "交易入账", customer: "客户", subscription: "签约",
  ACTIVITY_DROP: "交易活跃度下降", BALANCE_DROP: "余额下降", HOLDINGS_CLOSED: "持仓已结清", NO_RECENT_ACTIVITY: "近期无交易",
  RISK_TOLERANCE_EXPIRED: "风险测评已过期", NOT_HELD: "尚未持有", RISK_MATCH: "风险匹配", SEGMENT_AFFINITY: "客群偏好", IDLE_BALANCE: "闲置余额",
};
const enEnums = {
  SEGMENT_HIGH_VALUE: "High value", SEGMENT_GROWTH: "Growth", SEGMENT_POTENTIAL: "Potential", SEGMENT_LONG_TAIL: "Long tail", SEGMENT_NEW: "New", SEGMENT_UNSCORED: "Unscored",
  LIFECYCLE_STAGE_PROSPECT: "Prospect", LIFECYCLE_STAGE_ONBOARDING: "Onboarding", LIFECYCLE_STAGE_NEW: "New", LIFECYCLE_STAGE_ACTIVE: "Active",
  LIFECYCLE_STAGE_MATURE: "Mature", LIFECYCLE_STAGE_AT_RISK: "At risk", LIFECYCLE_STAGE_DORMANT: "Dormant", LIFECYCLE_STAGE_CLOSED: "Closed",
  STATUS_PENDING: "Pending", STATUS_ACTIVE: "Active", STATUS_CLOSED: "Closed", STATUS_REJECTED: "Rejected",
  STATE_OPEN: "Open", STATE_CLOSED: "Closed", STATE_DEAD: "Dead", STATE_REPLAYED: "Replayed", STATE_QUARANTINED: "Quarantined",
  TYPE_DEPOSIT: "Deposit", TYPE_LOAN: "Loan", TYPE_WEALTH: "Wealth", TYPE_CARD: "Card",
  DIRECTION_CREDIT: "Credit", DIRECTION_DEBIT: "Debit",
  CustomerCreated: "Customer registered", CustomerUpdated: "Details updated", CustomerVerified: "KYC verified", CustomerRejected: "KYC rejected",
  CustomerRiskAssessed: "Risk assessed", CustomerClosed: "Customer closed", SubscriptionOpened: "Subscription opened", SubscriptionClosed: "Subscription closed",
  TransactionPosted: "Transaction posted", customer: "Customer", subscription: "Subscription",
  ACTIVITY_DROP: "Activity dropped", BALANCE_DROP: "Balance dropped", HOLDINGS_CLOSED: "Holdings closed", NO_RECENT_ACTIVITY: "No recent activity",
  RISK_TOLERANCE_EXPIRED: "Risk assessment expired", NOT_HELD: "Not held yet", RISK_MATCH: "Risk match", SEGMENT_AFFINITY: "Segment affinity", IDLE_BALANCE: "Idle balance",
};
const tables = { "zh-CN": [zh, zhEnums], en: [en, enEnums] };

let lang = localStorage.getItem("zt.lang") || (navigator.language.startsWith("zh") ? "zh-CN" : "en");
if (!tables[lang]) lang = "zh-CN";

export function currentLang() { return lang; }
export function setLang(next) { lang = tables[next] ? next : "zh-CN"; localStorage.setItem("zt.lang", lang); document.documentElement.lang = lang; }
export function t(key) { return tables[lang][0][key] ?? key; }
/** An enum value or reason code in the current language (unknown codes as they are). */
export function label(code) { return code ? (tables[lang][1][code] ?? code) : "—"; }
/** Fills every [data-i18n] element under root with its label. */
export function translate(root = document) { for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n); }
