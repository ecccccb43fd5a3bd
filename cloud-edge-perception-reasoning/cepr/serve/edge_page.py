"""The live page of the edge service (``GET /``): plain HTML and a little inline JavaScript, no external files.
It polls ``/v1/state`` twice a second and reloads each source's ``/v1/frames/<source>/latest.jpg`` (the frame with
its class mask blended on top) when a new frame has been perceived."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cepr edge service</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;background:#f4f5f7;color:#1d2330}
h1{font-size:20px;margin:0 0 4px} .sub{color:#5a6275;font-size:13px;margin-bottom:12px}
.grid{display:flex;flex-wrap:wrap;gap:16px} .card{background:#fff;border-radius:8px;padding:10px;
box-shadow:0 1px 3px rgba(0,0,0,.12)} .card h2{font-size:15px;margin:0 0 6px}
.card img{display:block;width:360px;max-width:100%;background:#ccc;border-radius:4px}
.src{width:360px} .kv{font-size:12px;color:#39415a;margin-top:6px;overflow-wrap:anywhere} table{border-collapse:collapse;font-size:12px;width:100%}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #e3e6ec} th{background:#eef0f4}
.edge{color:#2d6a9f;font-weight:600} .cloud{color:#1f8a4c;font-weight:600} .warn{color:#b3471d}
</style></head><body>
<h1>cepr edge service</h1><div class="sub" id="sub">connecting...</div>
<div class="grid" id="sources"></div>
<div class="card" style="margin-top:16px"><h2>Recent answers</h2>
<table><thead><tr><th>time</th><th>source</th><th>frame</th><th>task</th><th>answer</th><th>conf.</th>
<th>from</th><th>edge said</th><th>cloud</th></tr></thead><tbody id="answers"></tbody></table></div>
<script>
const seen = {};
function esc(s){return String(s==null?'-':s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));}
function card(name){
  let el = document.getElementById('src-'+name);
  if(!el){ el = document.createElement('div'); el.className='card src'; el.id='src-'+name;
    el.innerHTML = '<h2>'+esc(name)+'</h2><img alt="latest frame of '+esc(name)+' with mask overlay">'+
                   '<div class="kv"></div>';
    document.getElementById('sources').appendChild(el); }
  return el;
}
async function tick(){
  try{
    const r = await fetch('/v1/state?recent=15', {cache:'no-store'}); const s = await r.json();
    const d = s.deployment, c = s.cloud || {}, dl = s.edge_deadline || {};
    document.getElementById('sub').textContent = 'algorithm '+d.algorithm+' ('+d.policy+' '+JSON.stringify(
      d.policy_hyperparameters)+') | cloud: '+c.mode+' | tasks: '+s.tasks.join(', ')+' | deadline '+s.deadline_s+
      ' s | up '+s.uptime_s.toFixed(0)+' s | cloud accepted '+(c.accepted||0)+', answered '+(c.answered||0)+
      ', shed '+(c.shed||0)+', expired '+(c.expired||0)+', queue '+(c.depth||0)+' | after the deadline: late '+
      (dl.late||0)+', pending '+(dl.pending_past_deadline||0);
    for(const [name,v] of Object.entries(s.sources)){
      const el = card(name);
      if(v.latest_frame_id!==null && seen[name]!==v.latest_frame_id){
        seen[name]=v.latest_frame_id;
        el.querySelector('img').src='/v1/frames/'+encodeURIComponent(name)+'/latest.jpg?f='+v.latest_frame_id;}
      el.querySelector('.kv').innerHTML = esc(v.kind)+(v.where?' '+esc(v.where):'')+' | frame '+esc(v.latest_frame_id)+
        ' | perceived '+v.perceived+' of '+v.captured+' | dropped '+v.dropped+' | bad '+v.bad+
        ' | cloud share '+(v.cloud_share==null?'-':(100*v.cloud_share).toFixed(0)+'%')+
        ' | cloud pending '+v.cloud_pending+', late '+v.cloud_late+', expired '+v.cloud_expired+
        (v.error?' | <span class="warn">'+esc(v.error)+'</span>':'')+(v.finished?' | ended':'');
    }
    document.getElementById('answers').innerHTML = s.recent_answers.map(a=>'<tr><td>'+
      new Date(a.answered_at*1000).toLocaleTimeString()+'</td><td>'+esc(a.source_name)+'</td><td>'+a.frame_id+
      '</td><td>'+esc(a.task)+'</td><td><b>'+esc(a.answer)+'</b></td><td>'+(a.confidence==null?'-':
      a.confidence.toFixed(2))+'</td><td class="'+a.source+'">'+a.source+'</td><td>'+esc(a.edge_answer)+
      '</td><td>'+esc(a.cloud_status)+(a.cloud_answer?' ('+esc(a.cloud_answer)+')':'')+'</td></tr>').join('');
  }catch(e){ document.getElementById('sub').textContent = 'service not answering: '+e; }
}
tick(); setInterval(tick, 500);
</script></body></html>
"""
