// Words for codes: levels, hazards, states, channels and roles as a duty room says them.
export const LEVELS = {
  red: { name: '红色', grade: 'I级', colour: '#c62828' },
  orange: { name: '橙色', grade: 'II级', colour: '#ef6c00' },
  yellow: { name: '黄色', grade: 'III级', colour: '#f9a825' },
  blue: { name: '蓝色', grade: 'IV级', colour: '#1565c0' },
  none: { name: '无预警', grade: '', colour: '#9e9e9e' },
}
export const LEVEL_BY_NUMBER = { 4: 'red', 3: 'orange', 2: 'yellow', 1: 'blue', 0: 'none' }

// the hazards officers may issue (alerting's HAZARD_CN), in the order the form offers them
export const HAZARDS = {
  rainstorm: '暴雨',
  flood: '洪水',
  geohazard: '地质灾害',
  gale: '大风',
  heat: '高温',
  forest_fire: '森林火险',
  coal_mine_gas: '煤矿瓦斯',
  hazardous_chemicals: '危险化学品',
  earthquake: '地震',
}

export const STATES = {
  draft: '草稿',
  pending_approval: '待审批',
  issued: '已发布',
  updated: '已更新',
  cancelled: '已解除',
  expired: '已过期',
  superseded: '已被取代',
  done: '已完成',
  rejected: '已驳回',
  withdrawn: '已撤回',
  approved: '已批准',
  pending: '待发送',
  sending: '发送中',
  sent: '已发送',
  delivered: '已送达',
  failed: '失败',
  confirmed: '已确认',
}

export const CHANNELS = {
  sms: '短信',
  voice: '语音',
  wechat_mp: '微信公众号',
  wecom: '企业微信',
  wecom_robot: '企业微信群机器人',
  email: '电子邮件',
  webhook: 'Webhook',
  cap_push: '上级平台（CAP）',
  national_push: '国家预警发布系统',
  kafka: 'alerts.v1',
  app: '应用推送',
}

export const ROLES = {
  village_cadre: '村（社区）干部',
  grid_worker: '网格员',
  info_officer: '信息员',
  enterprise_safety_officer: '企业安全员',
  township_duty_officer: '乡镇值班员',
  county_duty_officer: '区县值班员',
  leader: '带班领导',
}

export const MSG_TYPES = { Alert: '发布', Update: '更新', Cancel: '解除' }

export const label = (table, code) => (code == null ? '—' : table[code] ?? code)
export const hazardName = (h) => label(HAZARDS, h)
export const levelName = (l) => (LEVELS[l] ? `${LEVELS[l].name}${LEVELS[l].grade ? `（${LEVELS[l].grade}）` : ''}` : l)

const fmt = new Intl.DateTimeFormat('zh-CN', {
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
  hour12: false,
  timeZone: 'Asia/Shanghai',
})
export const when = (iso) => (iso ? fmt.format(new Date(iso)) : '—')

export function untilText(iso, now) {
  const s = Math.round((new Date(iso).getTime() - now) / 1000)
  const a = Math.abs(s)
  const t = a >= 3600 ? `${Math.floor(a / 3600)}时${Math.floor((a % 3600) / 60)}分` : `${Math.floor(a / 60)}分${a % 60}秒`
  return s >= 0 ? `${t}后` : `已超时 ${t}`
}
