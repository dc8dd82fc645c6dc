"""Write the built-in Chinese data sets: src/llm_chat/builtin_data/<set>_{train,test}.jsonl.

    uv run --frozen python packages/llm-chat/scripts/make_data.py

Everything was written for loraworks: templates and slot values for customer service, a bank FAQ with
hand-written answers and the keywords a correct answer must contain, and the four tasks of the reference
multi-task system (seed 004: question-scene and question-type classification, data-platform Q&A, file-name
extraction) in its prompt format, with expected outputs. The output is committed as source; `tests/test_data.py` checks it equals this script's
output (seeded, deterministic). Records are OpenAI `messages` plus metadata (intent / category / task /
keywords). Held-out splits use wordings (templates, question phrasings) the training split never shows.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

SEED = 20261125
OUT = Path(__file__).resolve().parents[1] / "src" / "llm_chat" / "builtin_data"

# ============================================================================ customer service (>= 1000)
CS_SYSTEM = "你是「优品商城」的在线客服助手，回答礼貌、简洁、准确，需要信息时主动询问。"
PRODUCTS = [
    "蓝牙耳机",
    "电饭煲",
    "运动鞋",
    "羽绒服",
    "机械键盘",
    "保温杯",
    "扫地机器人",
    "护肤套装",
    "儿童绘本",
    "空气炸锅",
    "双肩包",
    "智能手表",
]
COURIERS = ["顺丰", "中通", "圆通", "京东物流", "韵达", "EMS"]
CITIES = ["北京", "上海", "广州", "成都", "杭州", "武汉", "西安", "南京", "重庆", "长沙"]
DAYS = ["1", "2", "3", "5", "7"]


def order_no(rng: random.Random) -> str:
    return f"YP{rng.randint(2026000000, 2026999999)}"


# Each intent: user templates (slots {p} product, {o} order no, {c} courier, {city}, {d} days) and an answer
# builder. A template with {o} may also be asked without the order number first (multi-turn).
CS_INTENTS = {
    "order_status": {
        "user": [
            "我的订单{o}现在什么状态？",
            "帮我查一下订单{o}，买的{p}",
            "订单{o}怎么还没发货？",
            "请问我买的{p}发货了吗？订单号{o}",
            "查下单号{o}的进度",
            "我前天下单的{p}到哪一步了，订单{o}",
        ],
        "ask": ["我的订单什么状态了？", "帮我查一下我买的{p}的订单", "我的{p}怎么还没发货"],
        "answer": lambda s: (
            f"您好，已为您查询到订单{s['o']}（{s['p']}）已付款成功，仓库正在打包，预计24小时内发出。发货后您会收到短信通知，也可以在「我的订单」里随时查看物流进度。"
        ),
    },
    "refund": {
        "user": [
            "我想退掉订单{o}里的{p}",
            "{p}不想要了，怎么退款？订单{o}",
            "订单{o}申请退款多久到账？",
            "收到的{p}有质量问题，要退货，订单号{o}",
            "我要给{p}办退货退款，单号{o}",
            "退款申请提交了，订单{o}，钱什么时候退回来",
        ],
        "ask": ["我想退款", "{p}不想要了，怎么退？", "退货退款怎么操作"],
        "answer": lambda s: (
            f"您好，订单{s['o']}的{s['p']}支持7天无理由退货。请在「我的订单」中点击「申请售后」，选择退货退款并填写原因，审核通过后按页面地址寄回。仓库签收后1-3个工作日内原路退款，质量问题的运费由我们承担。"
        ),
    },
    "shipping": {
        "user": [
            "{p}发的是什么快递？订单{o}",
            "订单{o}的物流好几天没更新了",
            "我的包裹到{city}了吗？单号{o}",
            "{c}的件一直显示运输中，订单{o}",
            "订单{o}可以改收货地址到{city}吗",
            "买的{p}几天能到{city}？订单{o}",
        ],
        "ask": ["我的快递到哪了？", "物流好几天没更新了", "可以改收货地址吗"],
        "answer": lambda s: (
            f"您好，订单{s['o']}由{s['c']}配送，包裹目前在发往{s['city']}的转运途中，预计{s['d']}天内送达。若物流超过48小时未更新，我们会为您联系快递核实；未发货前也可以在订单详情里修改收货地址。"
        ),
    },
    "account": {
        "user": [
            "登录密码忘了怎么办",
            "账号被锁定了登不上去",
            "怎么修改绑定的手机号",
            "收不到登录验证码",
            "我想注销账号",
            "怎么设置支付密码",
            "会员积分在哪里看",
            "账号显示在别的设备登录了",
        ],
        "ask": [],
        "answer": None,  # account answers are per question (below)
    },
    "complaint": {
        "user": [
            "你们客服态度太差了，我要投诉",
            "{p}用了两天就坏了，非常失望，订单{o}",
            "快递员没送上门就签收了，订单{o}",
            "收到的{p}和图片完全不一样，订单{o}",
            "等了一周{p}还没到，太慢了，订单{o}",
            "商品少发了一件，订单{o}",
        ],
        "ask": [],
        "answer": lambda s: (
            f"非常抱歉给您带来不好的体验，您的反馈已记录为投诉工单{s['ticket']}，专属客服会在24小时内联系您处理，并根据核实结果为您补发、换货或补偿。感谢您的耐心与监督。"
        ),
    },
    "invoice": {
        "user": [
            "订单{o}怎么开发票？",
            "能开增值税专用发票吗，订单{o}",
            "发票抬头写错了，订单{o}",
            "买的{p}需要电子发票，订单{o}",
            "订单{o}的发票在哪下载",
        ],
        "ask": ["怎么开发票？", "我需要发票"],
        "answer": lambda s: (
            f"您好，订单{s['o']}确认收货后，可在「我的订单-发票服务」申请电子普通发票或增值税专用发票，填写抬头和税号后1-3个工作日开具，开好的电子发票可在同一页面下载。抬头填错可以在开票后30天内申请换开一次。"
        ),
    },
}
ACCOUNT_ANSWERS = {
    "登录密码忘了怎么办": "您好，请在登录页点击「忘记密码」，通过绑定手机号接收验证码后即可重置密码。新密码需为8-20位，包含字母和数字。",
    "账号被锁定了登不上去": "您好，连续输错密码5次账号会被锁定30分钟，到时自动解锁；着急使用可以点击「忘记密码」重置后立即登录。",
    "怎么修改绑定的手机号": "您好，请进入「我的-设置-账号与安全-手机号」，先验证原手机号，再输入新手机号和验证码即可完成换绑。原号码已停用的话可以选择人脸验证。",
    "收不到登录验证码": "您好，请确认手机号填写正确、未开启短信拦截，并等待60秒后重新获取。仍收不到可以选择语音验证码，或联系我们人工核实。",
    "我想注销账号": "您好，注销前请确认没有未完成的订单和售后，进入「我的-设置-账号与安全-注销账号」按提示验证身份即可。注销后积分、优惠券和订单记录将无法恢复。",
    "怎么设置支付密码": "您好，请进入「我的-设置-支付设置」，验证手机号后设置6位数字支付密码。为了安全，请不要使用生日或连续数字。",
    "会员积分在哪里看": "您好，会员积分可以在「我的-会员中心-积分明细」查看，每消费1元积1分，积分可在下单时抵扣现金或兑换优惠券。",
    "账号显示在别的设备登录了": "您好，为了账号安全，请立即修改登录密码，并在「账号与安全-登录设备管理」中移除陌生设备。如发现异常订单请马上联系我们冻结处理。",
}
ACCOUNT_PARAPHRASE = ["{q}", "你好，{q}", "请问{q}", "{q}？急", "客服，{q}"]
ASK_ORDER = "您好，请提供一下您的订单号（以YP开头），我马上为您查询。"


def make_customer_service(rng: random.Random) -> tuple[list[dict], list[dict]]:
    train, test = [], []
    for intent, spec in CS_INTENTS.items():
        templates = list(spec["user"])
        # The last template of each intent is held out: the test split asks in words training never saw.
        held = {templates[-1]}
        if intent == "account":
            for q, ans in ACCOUNT_ANSWERS.items():
                for j, para in enumerate(ACCOUNT_PARAPHRASE):
                    for _ in range(6 if j < len(ACCOUNT_PARAPHRASE) - 1 else 2):
                        rec = _cs([para.format(q=q)], ans, intent)
                        (test if j == len(ACCOUNT_PARAPHRASE) - 1 else train).append(rec)
            continue
        for t in templates:
            n = 30 if t not in held else 16
            for _ in range(n):
                s = _slots(rng)
                rec = _cs([t.format(**s)], spec["answer"](s), intent)
                (test if t in held else train).append(rec)
        for t in spec["ask"]:  # multi-turn: the customer forgets the order number
            for _ in range(14):
                s = _slots(rng)
                msgs = [
                    {"role": "system", "content": CS_SYSTEM},
                    {"role": "user", "content": t.format(**s)},
                    {"role": "assistant", "content": ASK_ORDER},
                    {
                        "role": "user",
                        "content": rng.choice(["订单号是{o}", "{o}", "好的，{o}", "单号：{o}"]).format(**s),
                    },
                    {"role": "assistant", "content": spec["answer"](s)},
                ]
                rec = {"messages": msgs, "intent": intent, "turns": 2}
                (test if rng.random() < 0.1 else train).append(rec)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def _slots(rng: random.Random) -> dict:
    return {
        "o": order_no(rng),
        "p": rng.choice(PRODUCTS),
        "c": rng.choice(COURIERS),
        "city": rng.choice(CITIES),
        "d": rng.choice(DAYS),
        "ticket": f"TS{rng.randint(100000, 999999)}",
    }


def _cs(users: list[str], answer: str, intent: str) -> dict:
    msgs = [{"role": "system", "content": CS_SYSTEM}]
    msgs += [{"role": "user", "content": users[0]}, {"role": "assistant", "content": answer}]
    return {"messages": msgs, "intent": intent, "turns": 1}


# ============================================================================ banking FAQ (>= 16 Q&A)
BANK_SYSTEM = "你是华信银行的智能客服，请依据本行业务规定准确回答客户问题。"
# category, [train phrasings ...], held-out phrasing, answer, keywords the answer must contain.
BANK = [
    (
        "账户",
        ["怎么开立个人储蓄账户？", "我想在你们银行开个户，需要什么？", "开银行卡要带什么材料"],
        "办一张华信银行的借记卡需要准备哪些东西？",
        "开立个人储蓄账户需本人携带有效身份证件原件和本人手机号到任一网点办理，也可在华信银行App通过人脸识别开立二类账户。一类账户每人在本行限开一个。",
        ["身份证件", "本人", "网点", "二类账户"],
    ),
    (
        "账户",
        ["银行卡丢了怎么办？", "借记卡丢失怎么挂失", "卡找不到了要怎么处理"],
        "我的储蓄卡不见了，该怎么办？",
        "请立即拨打客服热线95519或在华信银行App办理口头挂失，口头挂失有效期5天；之后请本人携带身份证到网点办理正式挂失和补卡，补卡工本费10元。",
        ["95519", "挂失", "身份证", "补卡"],
    ),
    (
        "账户",
        ["账户被冻结了怎么解冻？", "为什么我的卡被冻结了", "卡片冻结了还能用吗"],
        "我的银行账户突然不能用了，显示冻结，怎么处理？",
        "账户冻结多因长期不动户、密码连续输错或涉嫌异常交易。请本人携带身份证到开户网点核实身份并说明资金用途，核实无误后即可解除冻结。",
        ["身份证", "开户网点", "核实", "解除冻结"],
    ),
    (
        "账户",
        ["转账限额是多少？", "手机银行一天最多能转多少钱", "网银转账额度怎么调整"],
        "用App转账，每天的上限是多少？",
        "手机银行默认单笔限额5万元、日累计限额20万元；使用U盾可提高到单笔50万元。可在App「安全中心-限额管理」中调低限额，调高需到网点办理。",
        ["5万元", "20万元", "U盾", "限额管理"],
    ),
    (
        "贷款",
        ["房贷需要什么条件？", "申请住房贷款有什么要求", "买房贷款怎么申请"],
        "我想办个人住房按揭，需要满足什么条件？",
        "个人住房贷款要求借款人年满18周岁、有稳定收入和良好征信，首套房首付比例不低于20%，贷款期限最长30年。需提供身份证、收入证明、购房合同和首付款凭证。",
        ["稳定收入", "征信", "首付", "30年"],
    ),
    (
        "贷款",
        ["提前还贷要收违约金吗？", "房贷可以提前还吗", "提前还款怎么办理"],
        "我手头有钱了，想提前把贷款还掉，有什么规定？",
        "贷款满1年后提前还款免收违约金，不满1年收取提前还款本金的1%。请提前7个工作日在App或网点预约，可选择缩短期限或减少月供。",
        ["满1年", "违约金", "预约", "缩短期限"],
    ),
    (
        "贷款",
        ["消费贷利率多少？", "信用贷款年化利率是多少", "华信e贷的利息怎么算"],
        "你们的个人消费贷款利息高吗？",
        "华信e贷为纯信用消费贷款，年化利率3.6%起，最高额度30万元，按日计息，可随借随还。具体利率根据征信和收入综合评定，贷款资金不得用于购房和投资。",
        ["3.6%", "30万元", "按日计息", "随借随还"],
    ),
    (
        "贷款",
        ["经营贷怎么申请？", "小微企业贷款需要什么材料", "开店资金不够能贷款吗"],
        "我是个体工商户，想贷款周转，怎么办？",
        "小微经营贷面向个体工商户和小微企业主，需经营满1年，提供营业执照、经营流水和身份证，可用房产抵押或信用方式，最高500万元，期限最长3年。",
        ["营业执照", "经营流水", "抵押", "500万元"],
    ),
    (
        "理财",
        ["理财产品风险等级怎么分？", "R1到R5是什么意思", "理财风险等级有几级"],
        "买理财时看到的风险等级是怎么划分的？",
        "本行理财产品按风险从低到高分为R1至R5五个等级，客户需先完成风险承受能力评估，只能购买不高于自身评级的产品。评估结果有效期1年。",
        ["R1", "R5", "风险承受能力评估", "1年"],
    ),
    (
        "理财",
        ["理财收益是保本的吗？", "买理财会亏钱吗", "理财产品保证收益吗"],
        "你们卖的理财能保证不亏吗？",
        "根据资管新规，银行理财产品不承诺保本保收益，业绩比较基准不代表实际收益，净值可能波动甚至亏损本金。请根据自身风险承受能力理性选择。",
        ["不承诺保本", "业绩比较基准", "净值", "风险承受能力"],
    ),
    (
        "理财",
        ["大额存单起存金额多少？", "大额存单利率多少", "大额存单能提前支取吗"],
        "想存大额存单，有什么要求？",
        "个人大额存单起存金额20万元，期限有1个月到3年多档，利率高于同期定期存款；可提前支取，提前支取部分按活期利率计息，也可以在App转让。",
        ["20万元", "提前支取", "活期利率", "转让"],
    ),
    (
        "理财",
        ["基金定投怎么设置？", "怎么在App上定投基金", "定投可以随时停吗"],
        "我想每个月自动买基金，怎么弄？",
        "在华信银行App「理财-基金」选择产品后点击「定投」，设置每月扣款日期和金额即可，最低100元起投。可随时暂停或终止定投，赎回资金T+1至T+3到账。",
        ["定投", "100元", "暂停", "T+1"],
    ),
    (
        "信用卡",
        ["信用卡怎么申请？", "办信用卡需要什么条件", "我能办你们的信用卡吗"],
        "申请一张华信信用卡有什么要求？",
        "年满18周岁、有稳定收入的客户可在App或网点申请，需提供身份证和收入证明，审批一般需要5-7个工作日，额度根据征信和收入综合评定。",
        ["18周岁", "稳定收入", "身份证", "5-7个工作日"],
    ),
    (
        "信用卡",
        ["信用卡还款日忘了还怎么办？", "信用卡逾期了有什么影响", "还款晚了一天会怎样"],
        "这个月信用卡忘记还款了，会怎么样？",
        "本行提供3天还款宽限期，宽限期内还款视为正常还款；超过宽限期将按日收取万分之五利息并收取违约金，逾期记录会上报征信。建议设置自动还款。",
        ["宽限期", "万分之五", "征信", "自动还款"],
    ),
    (
        "信用卡",
        ["信用卡分期手续费多少？", "账单分期怎么收费", "分期还款划算吗"],
        "信用卡账单分12期要多少手续费？",
        "账单分期每期手续费率：3期0.75%、6期0.7%、12期0.65%，手续费按月收取。分期后可随时提前结清，已收手续费不退，未到期的手续费不再收取。",
        ["0.75%", "0.65%", "按月收取", "提前结清"],
    ),
    (
        "信用卡",
        ["信用卡额度怎么提升？", "可以提高信用卡额度吗", "临时额度怎么申请"],
        "我的信用卡额度不够用，能调高吗？",
        "持卡满6个月且用卡记录良好可在App「信用卡-额度管理」申请固定额度提升；临时额度可随时申请，有效期30天，到期需一次性还清。",
        ["6个月", "额度管理", "临时额度", "30天"],
    ),
    (
        "网络安全",
        ["收到短信说账户异常要我点链接，是真的吗？", "怎么识别银行诈骗短信", "有人冒充银行客服打电话怎么办"],
        "有人自称你们银行工作人员，让我提供验证码，该不该给？",
        "本行工作人员不会索要密码和短信验证码，也不会要求转账到所谓安全账户。请勿点击陌生链接，遇到可疑情况请挂断并拨打官方客服95519核实。",
        ["验证码", "安全账户", "陌生链接", "95519"],
    ),
    (
        "网络安全",
        ["手机银行登录要注意什么？", "怎么保护网银安全", "手机丢了手机银行怎么办"],
        "怎样才能安全地使用手机银行？",
        "请只从官方应用商店下载华信银行App，开启指纹或人脸登录，不在公共WiFi下操作转账。手机丢失请立即致电95519冻结手机银行并挂失。",
        ["官方应用商店", "人脸", "公共WiFi", "冻结"],
    ),
    (
        "网络安全",
        ["U盾有什么用？", "U盾丢了怎么办", "需要办U盾吗"],
        "我要不要申请一个U盾？",
        "U盾是网银大额转账的数字证书，能防止账户被盗用，开通后单笔转账限额可提高到50万元。U盾丢失请马上挂失，并带身份证到网点补办。",
        ["数字证书", "50万元", "挂失", "补办"],
    ),
    (
        "网络安全",
        ["卡被盗刷了怎么办？", "发现陌生消费记录怎么处理", "银行卡被盗刷能追回吗"],
        "我没消费但收到扣款短信，怎么办？",
        "请立即致电95519冻结卡片，并就近在ATM或网点做一笔查询证明卡在身边，然后向公安机关报案并保留回执，本行将根据调查结果协助追回资金。",
        ["冻结", "ATM", "报案", "追回"],
    ),
    (
        "外汇",
        ["个人每年能换多少外币？", "购汇额度是多少", "换美元有限制吗"],
        "一个人一年最多能买多少外汇？",
        "境内个人每人每年便利化购汇额度为等值5万美元，需如实填写购汇用途，不得用于境外购房、证券投资等资本项目。可在App或网点办理。",
        ["5万美元", "购汇用途", "境外购房", "资本项目"],
    ),
    (
        "外汇",
        ["怎么给国外汇款？", "境外汇款需要什么信息", "给留学的孩子汇学费怎么操作"],
        "我要往海外转一笔钱，需要准备什么？",
        "境外汇款需提供收款人姓名、账号、收款行SWIFT代码和地址，可在App或网点办理，一般1-3个工作日到账，手续费按汇款金额的0.1%收取，最低50元。",
        ["SWIFT", "收款人", "1-3个工作日", "0.1%"],
    ),
    (
        "外汇",
        ["外币现钞怎么取？", "取美元现金要预约吗", "网点能直接取外币吗"],
        "我想去柜台取一些欧元现钞，要注意什么？",
        "单日取外币现钞等值1万美元以下可直接办理，超过需提前1个工作日预约；部分币种只在指定网点提供，请先致电网点确认。",
        ["1万美元", "预约", "指定网点", "现钞"],
    ),
    (
        "外汇",
        ["汇率在哪里查？", "今天美元汇率多少", "结汇用哪个汇率"],
        "换汇时按什么汇率算？",
        "本行外汇牌价实时更新，可在App「外汇-汇率查询」查看。购汇按现汇卖出价计算，结汇按现汇买入价计算，现钞交易按现钞买入价计算。",
        ["外汇牌价", "现汇卖出价", "现汇买入价", "汇率查询"],
    ),
    (
        "保险",
        ["银行能买保险吗？", "你们代理哪些保险", "在银行买保险靠谱吗"],
        "在华信银行可以办理保险吗？",
        "本行代理销售持牌保险公司的人寿、健康和财产保险产品，保险责任由保险公司承担，银行不承担保险赔付。购买前请仔细阅读条款，确认投保人信息。",
        ["代理销售", "保险公司", "保险责任", "条款"],
    ),
    (
        "保险",
        ["保险犹豫期是多久？", "买了保险后悔了能退吗", "保险冷静期有几天"],
        "刚在银行买的保险不想要了，还能退吗？",
        "一年期以上人身保险有15天犹豫期，自签收保单次日起计算，犹豫期内退保可全额退还保费，仅扣除不超过10元的工本费；犹豫期后退保只退现金价值。",
        ["15天", "犹豫期", "全额退还", "现金价值"],
    ),
    (
        "保险",
        ["理赔怎么申请？", "保险出险了找谁", "理赔要什么材料"],
        "我买的保险需要理赔，流程是什么？",
        "出险后请在48小时内拨打承保保险公司客服报案，按要求准备保单、身份证、医疗发票或事故证明等材料提交理赔，银行网点可协助转交材料。",
        ["48小时", "报案", "保险公司", "理赔"],
    ),
    (
        "保险",
        ["存款保险是什么？", "银行倒闭存款还在吗", "存款保险保多少钱"],
        "我的存款放在你们银行安全吗？有保障吗？",
        "本行已参加存款保险，同一存款人在本行的存款本息合计50万元以内全额偿付，超出部分依法从清算财产中受偿。理财产品不属于存款保险范围。",
        ["存款保险", "50万元", "全额偿付", "理财产品"],
    ),
]
BANK_PREFIX = ["", "你好，", "请问", "麻烦问下，"]


def make_banking(rng: random.Random) -> tuple[list[dict], list[dict]]:
    train, test = [], []
    for cat, phrasings, held, ans, kws in BANK:
        for q in phrasings:
            for pre in rng.sample(BANK_PREFIX, 2):
                train.append(_bank(pre + q, ans, cat, kws))
        test.append(_bank(held, ans, cat, kws))
    rng.shuffle(train)
    return train, test


def _bank(q: str, a: str, cat: str, kws: list[str]) -> dict:
    msgs = [
        {"role": "system", "content": BANK_SYSTEM},
        {"role": "user", "content": q},
        {"role": "assistant", "content": a},
    ]
    return {"messages": msgs, "category": cat, "keywords": kws}


# ============================================================================ multi-task (reference system 004)
# The four tasks, labels and prompt format of the reference multi-task SFT system (seed 004): the user turn
# is `任务: <task name>\n输入: <text>` (no system prompt, no "输出:"), the answer is the bare output. Its
# assistant serves a natural-resources spatial data platform (地类图斑 data, 发服务 = publish a map service,
# data cleaning by 清洗规则 + 清洗方案), so ours does too. Record task ids (scene_cls, ...) are ours; the
# prompt carries the reference system's Chinese task names.
MT_TASKS = {
    "scene_cls": "问题场景分类",
    "qtype_cls": "问题类型分类",
    "dp_qa": "问题回答",
    "filename_extract": "文件名称提取",
}
# 通用问题 = talk with the assistant itself (greetings, who it is, what it can do, thanks, farewells; the class
# text-classifier calls 通用对话); 无关问题 = anything else that has nothing to do with the platform.
DP, GENERAL, UNRELATED = "数据平台相关问题", "通用问题", "无关问题"
SCENE_LABELS = [DP, GENERAL, UNRELATED]
# 问题回答 = the user asks how/what/why (the assistant answers); 任务处理 = the user asks the assistant to do
# something on the platform. Seed 004 labels "我有一批西安市地类图斑的数据，怎么进行发服务" 问题回答.
ASK, DO = "问题回答", "任务处理"
QTYPE_LABELS = [ASK, DO]
MT_TEST_EVERY = 4  # every 4th template of a class (after a seeded shuffle) is held out, as in text-classifier
# Distinct fillings per training template (held-out templates give at most 2: ~90 test items in all). A
# data-platform sentence gives one scene item: the same wordings also train the type and extraction tasks.
MT_PER_TEMPLATE = {"scene_cls": 3, "scene_cls_dp": 1, "qtype_cls": 3, "filename_extract": 3}

PLACES = [
    "西安市",
    "咸阳市",
    "宝鸡市",
    "渭南市",
    "延安市",
    "汉中市",
    "榆林市",
    "安康市",
    "商洛市",
    "铜川市",
    "雁塔区",
    "长安区",
    "临潼区",
    "鄠邑区",
    "高陵区",
    "杨凌示范区",
]
LAYERS = [
    "地类图斑",
    "永久基本农田",
    "生态保护红线",
    "城镇开发边界",
    "行政区划",
    "土地利用现状",
    "宗地",
    "村庄规划",
    "耕地保护目标",
    "地籍调查",
    "林地",
    "自然保护地",
    "建设用地报批",
    "矿业权",
    "遥感影像",
    "DEM高程",
]
YEARS = ["2021年", "2022年", "2023年", "2024年"]
EXTS = [".shp", ".gdb", ".zip", ".geojson"]


def data_name(rng: random.Random) -> str:
    """A data set's name as users write it: place + layer, sometimes with the year in front."""
    name = rng.choice(PLACES) + rng.choice(LAYERS)
    return rng.choice(YEARS) + name if rng.random() < 0.3 else name


# Slot values; `data` and `file` are generated (a file is a data name with its extension).
MT_SLOTS: dict[str, list[str]] = {
    "fmt": ["GDB", "Shapefile", "GeoJSON", "Excel"],
    "org": ["市规划局", "区县自然资源分局", "不动产登记中心", "林业局", "测绘院"],
    "person": ["张工", "李科长", "王老师", "新来的同事", "测绘院的刘工"],
    "greet": ["你好", "您好", "早上好", "下午好", "嗨", "哈喽"],
    "thanks": ["谢谢", "多谢", "感谢", "辛苦了，谢谢"],
    "bye": ["再见", "拜拜", "先这样吧", "我先下线了"],
    "you": ["小助手", "助手", "机器人"],
    "city": ["北京", "上海", "成都", "杭州", "西安", "厦门", "重庆", "青岛"],
    "dish": ["红烧肉", "宫保鸡丁", "麻婆豆腐", "酸菜鱼", "糖醋排骨", "蛋炒饭"],
    "genre": ["科幻", "悬疑", "喜剧", "动画", "纪录片"],
    "team": ["湖人", "皇马", "国足", "勇士", "曼联"],
    "symptom": ["感冒", "嗓子疼", "胃疼", "发烧", "过敏"],
    "pet": ["猫", "狗", "仓鼠", "兔子", "鹦鹉"],
    "food": ["西瓜", "米饭", "酸奶", "牛奶", "月饼"],
    "subject": ["高数", "英语四级", "考研政治", "雅思口语"],
    "a": ["37", "128", "2.5", "64"],
    "b": ["15", "999", "12", "3.6"],
}

# Data-platform questions: (pattern, question type). Those naming a data set ({data} or {file}) also make
# the file-name extraction items; all of them make scene (数据平台相关问题) and type items.
DP_TEMPLATES: list[tuple[str, str]] = [
    ("我有一批{data}的数据，怎么进行发服务", ASK),
    ("{data}数据怎么入库？", ASK),
    ("{data}入库的时候提示坐标系不一致，该怎么处理？", ASK),
    ("{data}发布成服务以后，服务地址在哪里看？", ASK),
    ("{data}的质检没通过，质检报告在哪下载？", ASK),
    ("想把{data}导出成shp格式，在哪里操作？", ASK),
    ("{data}的地图服务加载很慢，有什么办法吗", ASK),
    ("为什么{data}叠加到底图上会有偏移？", ASK),
    ("{data}更新以后，之前发布的服务会自动更新吗？", ASK),
    ("{data}的元数据在哪里修改？", ASK),
    ("怎么申请{data}数据的下载权限？", ASK),
    ("{data}里各个地类的面积怎么统计？", ASK),
    ("上传的{file}一直显示解析中，是什么原因？", ASK),
    ("{file}入库失败，提示缺少投影文件，怎么办", ASK),
    ("{data}能不能回退到上个月的版本？", ASK),
    ("平台支持哪些格式的矢量数据入库？", ASK),
    ("切片服务和动态地图服务有什么区别？", ASK),
    ("数据共享申请一般多久能审批完？", ASK),
    ("清洗规则和清洗方案是什么关系？", ASK),
    ("质检规则可以自己定义吗？", ASK),
    ("服务的访问令牌过期了怎么续期？", ASK),
    ("拓扑检查主要检查哪些问题", ASK),
    ("帮我把{data}数据发布成服务", DO),
    ("请将{data}数据入库", DO),
    ("对{data}做一次数据质检", DO),
    ("把{data}的坐标系转换成CGCS2000", DO),
    ("帮我导出{data}数据，格式要{fmt}", DO),
    ("把{data}数据共享给{org}", DO),
    ("重新生成{data}服务的切片", DO),
    ("帮我统计一下{data}的总面积", DO),
    ("启动{data}的数据清洗任务", DO),
    ("给{person}开通{data}的查看权限", DO),
    ("查一下{data}入库任务现在的进度", DO),
    ("用最新的{data}数据更新一下服务", DO),
    ("我刚上传了{file}，帮我入库", DO),
    ("把{file}转换成GeoJSON格式", DO),
    ("{data}数据有问题，帮我回退到上一个版本", DO),
    ("把{data}和现有的底图叠加，发布成一个新服务", DO),
    ("帮我新建一个数据清洗方案", DO),
    ("把昨天失败的入库任务全部重跑一遍", DO),
    ("生成本月的数据更新统计报表", DO),
    ("停掉所有正在运行的切片任务", DO),
    ("帮我重置一下服务的访问令牌", DO),
    ("删除上周创建的测试服务", DO),
]
GENERAL_TEMPLATES = [
    "{greet}",
    "{greet}，你是谁？",
    "你能帮我做哪些事情？",
    "你叫什么名字",
    "{thanks}，问题解决了",
    "你是真人还是机器人？",
    "今天辛苦你了",
    "{bye}，下次再来问你",
    "在吗？",
    "刚才的回答很清楚，{thanks}",
    "你的回答好像不对，能再想想吗",
    "{greet}，第一次用这个助手，请多指教",
    "你会记住我们之前聊过的内容吗",
    "我不太会提问，你能教教我怎么问吗",
    "好的，明白了",
    "哈哈，你还挺有意思的",
    "你背后用的是什么模型",
    "能不能回答得简短一点",
    "你支持英文提问吗",
    "{you}，你今天心情怎么样",
    "我刚才说错了，不好意思",
    "你能陪我聊会儿天吗",
    "你和ChatGPT有什么区别",
    "这么晚了{you}还在线啊",
]
UNRELATED_TEMPLATES = [
    "{city}明天会下雨吗",
    "{dish}怎么做才好吃",
    "推荐几部好看的{genre}电影",
    "{team}昨晚的比赛谁赢了",
    "{symptom}了吃什么药好得快",
    "周末去{city}玩有什么推荐的景点",
    "iPhone怎么截长图",
    "今年国庆放几天假",
    "怎么写一封得体的辞职信",
    "帮我算一下{a}乘以{b}等于多少",
    "猫为什么喜欢踩奶",
    "租房签合同要注意什么",
    "高铁票退票手续费怎么算",
    "{pet}不吃东西怎么办",
    "世界上最高的山是哪座",
    "科目二倒车入库有什么技巧",
    "手机流量用得太快怎么办",
    "换新手机后怎么迁移微信聊天记录",
    "{city}有哪些必吃的小吃",
    "{food}放冰箱能保存几天",
    "孩子不爱写作业怎么办",
    "{subject}怎么复习效率高",
    "Excel表格怎么按颜色筛选",
    "地球到月球有多远",
]
# Data-platform Q&A (问题回答): [train phrasings], held-out phrasing, answer, keywords a correct answer holds.
# The first answer is seed 004's own example, completed.
DP_QA = [
    (
        ["数据清洗流程", "数据清洗怎么做？", "平台上怎么清洗数据"],
        "我想把一批数据清洗一下，步骤是什么？",
        "数据清洗流程需要先配置清洗规则，再配置清洗方案，最后针对要清洗的数据启动清洗任务即可。清洗规则定义字段格式、空值和重复图斑的处理方式，清洗方案把多条规则组合起来，任务完成后可在任务中心查看清洗日志。",
        ["清洗规则", "清洗方案", "启动清洗任务", "任务中心"],
    ),
    (
        ["数据怎么发布服务", "如何发服务", "矢量数据发布成地图服务的步骤"],
        "入库后的图层想让别人在地图上看到，要怎么发？",
        "发布服务需要先完成数据入库，再进入服务管理点击新建服务，选择已入库的数据和服务类型（WMS、WFS或WMTS），配置符号样式后点击发布，发布成功后在服务详情中可以复制服务地址。",
        ["数据入库", "服务管理", "服务类型", "服务地址"],
    ),
    (
        ["数据入库流程", "怎么把数据导入平台", "shp文件怎么入库"],
        "手上有一份矢量数据，要放进平台里，该怎么操作？",
        "数据入库先在数据目录中选择或新建数据集，上传Shapefile、GDB或GeoJSON文件（Shapefile需打成zip包并包含prj投影文件），平台自动检查坐标系和字段映射，确认无误后提交入库任务，完成后数据即出现在数据目录中。",
        ["数据目录", "zip", "坐标系", "入库任务"],
    ),
    (
        ["数据质检怎么做", "怎么检查数据质量", "质检流程是什么"],
        "入库前想确认图斑有没有拓扑错误，用什么功能？",
        "在质检管理中选择质检规则集（拓扑检查、属性检查、坐标系检查等），指定待质检的数据后启动质检任务，完成后可在线查看问题图斑并下载质检报告，问题修正后可以重新质检。",
        ["质检规则集", "拓扑检查", "质检任务", "质检报告"],
    ),
    (
        ["坐标系怎么转换", "如何把数据转成2000坐标系", "坐标转换在哪里做"],
        "我的数据是西安80坐标，平台要求国家2000，怎么办？",
        "在数据处理工具中选择坐标转换，设置源坐标系（如西安80或北京54）和目标坐标系CGCS2000，选择七参数或格网转换方法后执行转换任务，转换结果另存为新数据，原数据保持不变。",
        ["坐标转换", "源坐标系", "CGCS2000", "七参数"],
    ),
    (
        ["数据权限怎么申请", "没有数据查看权限怎么办", "怎么申请下载数据"],
        "别的部门的图层我看不了，要走什么流程？",
        "在数据目录中找到目标数据，点击申请权限，选择查看或下载权限并填写用途和有效期，提交后由数据管理员审批，审批通过后会收到消息通知，即可查看或下载。",
        ["申请权限", "用途", "数据管理员", "审批"],
    ),
    (
        ["数据怎么导出", "怎么下载平台上的数据", "数据可以导出成哪些格式"],
        "想把平台里的图层拷出来给外单位，怎么弄？",
        "在数据目录中选中数据点击导出，选择导出格式（Shapefile、GDB、GeoJSON或Excel）和导出范围，导出任务完成后到下载中心下载文件；涉密数据导出需要先通过审批。",
        ["导出格式", "导出范围", "下载中心", "审批"],
    ),
    (
        ["数据更新后服务怎么同步", "服务的数据怎么更新", "更新了数据服务还是旧的"],
        "底层数据改过了，地图上显示的还是以前的，怎么刷新？",
        "数据更新后在服务管理中找到对应服务，点击刷新缓存即可使用最新数据；如果字段结构发生了变化需要重新发布服务，切片服务还需要重新生成切片。",
        ["服务管理", "刷新缓存", "重新发布", "重新生成切片"],
    ),
    (
        ["元数据怎么编辑", "在哪里修改数据的元数据", "元数据包括哪些内容"],
        "数据的来源和比例尺信息写错了，去哪改？",
        "在数据目录中打开数据详情，进入元数据页签即可编辑数据名称、数据来源、比例尺、坐标系、更新时间和负责人等信息，保存后立即生效，修改记录保留在操作日志中。",
        ["数据详情", "元数据页签", "比例尺", "操作日志"],
    ),
    (
        ["数据怎么共享给其他单位", "共享交换怎么用", "如何把服务共享出去"],
        "区县的同事也要用我们的图层，怎么给他们？",
        "在共享交换模块新建共享申请，选择要共享的数据或服务，填写接收单位、共享方式和共享期限，审批通过后对方可以通过共享接口或服务地址访问，到期后权限自动回收。",
        ["共享交换", "接收单位", "共享期限", "自动回收"],
    ),
    (
        ["任务失败了怎么处理", "入库任务报错怎么办", "怎么查看任务失败原因"],
        "我提交的处理任务一直显示失败，从哪里下手排查？",
        "在任务中心找到失败的任务，打开运行日志查看报错信息，常见原因有字段缺失、几何错误和坐标系不一致，按提示修正数据后点击重试即可，重试仍失败可以导出日志联系平台运维。",
        ["任务中心", "运行日志", "几何错误", "重试"],
    ),
    (
        ["多个图层怎么合并", "数据融合怎么操作", "几个区县的数据能拼成一个吗"],
        "各区分别上报的图斑想汇总成全市一张图，用什么工具？",
        "使用数据处理中的数据融合工具，添加需要合并的图层并设置字段对应关系，可以选择按融合字段合并相邻图斑，执行后生成一份新的合并数据，原图层不受影响。",
        ["数据融合", "字段对应关系", "融合字段", "新的合并数据"],
    ),
    (
        ["地图切片怎么做", "服务怎么生成切片", "切片级别怎么设置"],
        "影像服务浏览很卡，想做成瓦片，怎么操作？",
        "在服务管理中选择服务点击生成切片，设置切片方案和起止级别（市级数据一般到18级即可），切片任务完成后服务以WMTS方式提供，浏览速度会明显提升。",
        ["生成切片", "切片方案", "级别", "WMTS"],
    ),
    (
        ["数据有历史版本吗", "怎么回退数据版本", "数据版本怎么对比"],
        "昨天覆盖入库把数据弄错了，能恢复成之前的吗？",
        "平台对每次入库和更新自动生成数据版本，在数据详情的版本页签可以查看历史版本，选中两个版本可以对比差异，确认后点击回退即可恢复到所选版本。",
        ["版本页签", "历史版本", "对比差异", "回退"],
    ),
    (
        ["怎么统计图斑面积", "面积统计工具怎么用", "怎么按行政区统计面积"],
        "领导要各个乡镇的耕地有多少亩，平台能算吗？",
        "在分析工具中选择面积统计，选择数据和分类字段（如地类名称），再选择统计单元（如乡镇行政区划），执行后得到分类汇总的面积表，单位可选平方米、亩或公顷，结果可以导出为Excel。",
        ["面积统计", "分类字段", "统计单元", "Excel"],
    ),
    (
        ["服务地址怎么调用", "怎么在ArcGIS里加载平台的服务", "服务怎么接入自己的系统"],
        "我们的业务系统想用平台的底图，怎么接？",
        "在服务详情页复制服务地址和访问令牌，在ArcGIS、QGIS或前端地图框架中按WMS、WFS或WMTS协议添加该地址，并在请求中携带令牌即可调用；令牌过期后可在个人中心重新生成。",
        ["服务地址", "访问令牌", "WMTS", "个人中心"],
    ),
]


def mt_prompt(task: str, text: str) -> str:
    """The reference system's user turn: `任务: <task name>\\n输入: <text>`."""
    return f"任务: {MT_TASKS[task]}\n输入: {text}"


def _fill(pattern: str, rng: random.Random) -> tuple[str, str | None]:
    """(text, the data or file name it holds, or None) for one filling of a template."""
    values: dict[str, str] = {}
    name = None
    for _, field_name, _, _ in string.Formatter().parse(pattern):
        if field_name == "data":
            values["data"] = name = data_name(rng)
        elif field_name == "file":
            values["file"] = name = data_name(rng) + rng.choice(EXTS)
        elif field_name:
            values[field_name] = rng.choice(MT_SLOTS[field_name])
    return pattern.format(**values), name


def _held_out(template_ids: list[str], rng: random.Random) -> set[str]:
    """Every MT_TEST_EVERY-th template id after a seeded shuffle."""
    order = list(template_ids)
    rng.shuffle(order)
    return set(order[::MT_TEST_EVERY])


def make_multitask(rng: random.Random) -> tuple[list[dict], list[dict]]:
    train, test = [], []
    # Templates of each class; the held-out ones (per class, so every label is in the test split) serve
    # every task: a test sentence's wording was never seen in training, whatever the task.
    dp = [(f"dp-{i:02d}", p, qtype) for i, (p, qtype) in enumerate(DP_TEMPLATES)]
    general = [(f"general-{i:02d}", p, GENERAL) for i, p in enumerate(GENERAL_TEMPLATES)]
    unrelated = [(f"unrelated-{i:02d}", p, UNRELATED) for i, p in enumerate(UNRELATED_TEMPLATES)]
    held: set[str] = set()
    for group in ([t for t in dp if t[2] == ASK], [t for t in dp if t[2] == DO], general, unrelated):
        held |= _held_out([t[0] for t in group], rng)

    def emit(task: str, tid: str, pattern: str, n: int, label: str | None = None, **meta) -> None:
        """n distinct fillings (at most 2 of a held-out template) as `task` items; the answer is `label`, or
        (extraction) the data or file name in the filling."""
        n, texts = min(n, 2) if tid in held else n, []
        for _ in range(20 * n):  # templates without slots give one text; slot collisions are retried
            text, name = _fill(pattern, rng)
            if text not in seen[task]:
                seen[task].add(text)
                texts.append((text, name))
            if len(texts) == n:
                break
        for text, name in texts:
            (test if tid in held else train).append(_mt(task, text, label or name, tid, **meta))

    seen: dict[str, set[str]] = {task: set() for task in MT_TASKS}
    n = MT_PER_TEMPLATE
    for tid, pattern, label in dp + general + unrelated:
        scene, k = (DP, n["scene_cls_dp"]) if tid.startswith("dp-") else (label, n["scene_cls"])
        emit("scene_cls", tid, pattern, k, scene, labels=SCENE_LABELS)
    for tid, pattern, qtype in dp:
        emit("qtype_cls", tid, pattern, n["qtype_cls"], qtype, labels=QTYPE_LABELS)
        if "{data}" in pattern or "{file}" in pattern:
            emit("filename_extract", tid, pattern, n["filename_extract"])
    # Q&A: the facts must be trained to be recalled, so the held-out item is a new wording of a trained
    # question (as for the banking FAQ); its template id is its own.
    for i, (phrasings, held_q, answer, keywords) in enumerate(DP_QA):
        for j, q in enumerate(phrasings):
            train.append(_mt("dp_qa", q, answer, f"qa-{i:02d}-{j}", keywords=keywords))
        test.append(_mt("dp_qa", held_q, answer, f"qa-{i:02d}-held", keywords=keywords))
    rng.shuffle(train)
    rng.shuffle(test)  # mixed tasks: a --max_eval_items cap still samples every task
    return train, test


def _mt(task: str, text: str, answer: str, template: str, **meta) -> dict:
    msgs = [{"role": "user", "content": mt_prompt(task, text)}, {"role": "assistant", "content": answer}]
    return {"messages": msgs, "task": task, "template": template, **meta}


# ============================================================================ write
def build() -> dict[str, list[dict]]:
    """All files as {filename: records}."""
    out = {}
    for name, fn in (
        ("customer_service", make_customer_service),
        ("banking", make_banking),
        ("multitask", make_multitask),
    ):
        train, test = fn(random.Random(f"{SEED}-{name}"))
        out[f"{name}_train.jsonl"], out[f"{name}_test.jsonl"] = train, test
    return out


def dumps(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for fname, records in build().items():
        (OUT / fname).write_text(dumps(records), encoding="utf-8")
        print(f"{fname}: {len(records)}")


if __name__ == "__main__":
    main()
